// Command submit publishes one OpenQASM job to qbus and prints its final event.
//
// It uses only nats.go and the standard library: the job is plain JSON, the same bytes
// any language would send (docs/protocol.md). The result subscription is a JetStream
// ordered consumer on qbus.result.<job>, created before the job is published, so the
// final event cannot be missed; because it reads the stream it would also find a
// result that was stored before it started.
//
// Usage:
//
//	go run . --url nats://127.0.0.1:4222 --shots 1000
//
// --traceparent 00-<trace id>-<span id>-01 continues a trace of yours: every qbus stage's
// span joins it (docs/observability.md); without it the job starts a trace of its own.
//
// Exit status: 0 on job.completed, 1 on job.failed / job.rejected, 2 on errors.
package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"regexp"
	"time"

	"github.com/nats-io/nats.go"
)

const bell = `OPENQASM 3.0;
include "stdgates.inc";
qubit[2] q;
bit[2] c;
h q[0];
cx q[0], q[1];
c = measure q;
`

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(2)
}

func main() {
	url := flag.String("url", nats.DefaultURL, "NATS server URL")
	prefix := flag.String("prefix", "qbus", "subject prefix")
	stream := flag.String("stream", "QBUS", "event-log stream name")
	shots := flag.Int("shots", 1000, "shots")
	timeout := flag.Duration("timeout", 60*time.Second, "how long to wait for the result")
	parent := flag.String("traceparent", "", "W3C traceparent of a trace to continue")
	flag.Parse()

	nc, err := nats.Connect(*url, nats.Name("qbus-go-client"))
	if err != nil {
		fail("connect: %v", err)
	}
	defer nc.Close()
	js, err := nc.JetStream()
	if err != nil {
		fail("jetstream: %v", err)
	}

	jobID := "go-" + randomHex(8)
	eventID := randomHex(16)
	// W3C trace context: version 00, 16-byte trace id, 8-byte parent id, sampled.
	traceparent := fmt.Sprintf("00-%s-%s-01", randomHex(16), randomHex(8))
	if *parent != "" {
		if !regexp.MustCompile(`^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$`).MatchString(*parent) {
			fail("--traceparent %s: expected 00-<32 hex>-<16 hex>-<2 hex> (W3C)", *parent)
		}
		traceparent = *parent
	}

	sub, err := js.SubscribeSync(*prefix+".result."+jobID, nats.OrderedConsumer(), nats.BindStream(*stream))
	if err != nil {
		fail("subscribe: %v", err)
	}
	defer sub.Unsubscribe()

	job := map[string]interface{}{
		"type":     "job.submitted",
		"event_id": eventID,
		"job_id":   jobID,
		"producer": "go-client",
		"source":   bell,
		"shots":    *shots,
	}
	data, _ := json.Marshal(job)
	msg := nats.NewMsg(*prefix + ".submit")
	msg.Data = data
	msg.Header.Set("Nats-Msg-Id", eventID)
	msg.Header.Set("traceparent", traceparent)
	if _, err := js.PublishMsg(msg); err != nil {
		fail("publish: %v", err)
	}
	fmt.Fprintf(os.Stderr, "submitted %s (traceparent %s)\n", jobID, traceparent)

	res, err := sub.NextMsg(*timeout)
	if err != nil {
		fail("no result for %s: %v", jobID, err)
	}
	fmt.Println(string(res.Data))
	var final struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(res.Data, &final); err != nil {
		fail("bad result JSON: %v", err)
	}
	if final.Type != "job.completed" {
		os.Exit(1)
	}
}
