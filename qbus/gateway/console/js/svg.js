// The console's pictures, drawn by hand as SVG (no charting library): the counts
// histogram, the circuit from the JSON IR (docs/protocol.md), and the timeline bars.

import { h, s } from "./dom.js";

const MAX_BARS = 64; // more outcomes than this: the 64 most frequent are drawn

/** Counts as SVG bars, one <g class="bar" data-outcome data-count> per outcome. */
export function histogram(counts, shots) {
  let entries = Object.entries(counts ?? {});
  const total = entries.reduce((sum, [, n]) => sum + n, 0);
  const clipped = entries.length > MAX_BARS;
  if (clipped) entries = entries.sort((a, b) => b[1] - a[1]).slice(0, MAX_BARS);
  entries.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  const width = 56;
  const height = 180;
  const top = 20;
  const bottom = 36;
  const max = Math.max(1, ...entries.map(([, n]) => n));
  const svgWidth = Math.max(240, entries.length * width + 20);
  const svg = s("svg", {
    class: "hist", role: "img", width: svgWidth, height: height + top + bottom,
    viewBox: `0 0 ${svgWidth} ${height + top + bottom}`,
    "aria-label": `Counts histogram: ${entries.map(([k, n]) => `${k} ${n}`).join(", ")}`,
  });
  entries.forEach(([outcome, n], i) => {
    const barHeight = Math.max(1, Math.round((n / max) * height));
    const x = 10 + i * width;
    svg.append(s("g", { class: "bar", "data-outcome": outcome, "data-count": n },
      s("rect", { class: "bar-fill", x: x + 8, y: top + height - barHeight, width: width - 16, height: barHeight },
        s("title", {}, `${outcome}: ${n} (${((100 * n) / (total || 1)).toFixed(1)}%)`)),
      s("text", { x: x + width / 2, y: top + height - barHeight - 4, "text-anchor": "middle" }, n),
      s("text", { x: x + width / 2, y: top + height + 16, "text-anchor": "middle", class: "mono" }, outcome),
    ));
  });
  svg.append(s("line", { x1: 6, x2: svgWidth - 6, y1: top + height, y2: top + height, stroke: "currentColor" }));
  const note = [`${total} shots counted`];
  if (shots !== undefined && shots !== null && shots !== total) note.push(`of ${shots} asked`);
  if (clipped) note.push(`the ${MAX_BARS} most frequent outcomes shown`);
  return h("figure", { class: "scroll" }, svg, h("figcaption", { class: "muted" }, note.join("; ")));
}

function paramText(param) {
  if (typeof param === "number") return Number.isInteger(param) ? String(param) : param.toFixed(3);
  const text = typeof param === "string" ? param : JSON.stringify(param);
  return text.length > 10 ? `${text.slice(0, 9)}…` : text;
}

// Controlled gates drawn as dots on their controls; the rest is the target's picture.
const TARGET_OF = { cx: "x", cnot: "x", ccx: "x", toffoli: "x", cy: "y", ch: "h", cp: "p",
  cphase: "p", crx: "rx", cry: "ry", crz: "rz", cu: "u", cu1: "u1", cu3: "u3", csx: "sx", cswap: "swap",
  cz: "z", ccz: "z", mcx: "x" };
const CONTROLS = { ccx: 2, toffoli: 2, ccz: 2 };

const COL = 52;
const ROW = 40;
const LEFT = 44;
const BOX = 30;

/** The circuit as SVG: a wire per qubit, ops placed left to right in the first free column. */
export function circuit(ir) {
  const nq = Math.max(1, ir.num_qubits ?? 1);
  const level = new Array(nq).fill(0);
  const placed = [];
  for (const op of ir.ops ?? []) {
    const qubits = op.qubits?.length ? op.qubits : [...Array(nq).keys()];
    const lo = Math.min(...qubits);
    const hi = Math.max(...qubits);
    let col = 0;
    for (let q = lo; q <= hi; q++) col = Math.max(col, level[q]);
    for (let q = lo; q <= hi; q++) level[q] = col + 1;
    placed.push({ op, qubits, lo, hi, col });
  }
  const cols = Math.max(1, ...level);
  const width = LEFT + cols * COL + 20;
  const height = nq * ROW + 10;
  const svg = s("svg", {
    class: "circuit", role: "img", width, height, viewBox: `0 0 ${width} ${height}`,
    "aria-label": `Circuit: ${nq} qubits, ${(ir.ops ?? []).length} operations`,
  });
  const y = (q) => 20 + q * ROW;
  const x = (col) => LEFT + col * COL + COL / 2;
  for (let q = 0; q < nq; q++) {
    svg.append(s("text", { x: 4, y: y(q) + 4 }, `q${q}`));
    svg.append(s("line", { class: "wire", x1: LEFT - 8, x2: width - 10, y1: y(q), y2: y(q) }));
  }
  for (const item of placed) svg.append(drawOp(item, x(item.col), y));
  return h("figure", { class: "scroll" }, svg);
}

function box(cx, cy, label, sub, cls = "gate", spanHeight = BOX) {
  return s("g", { class: cls },
    s("rect", { x: cx - BOX / 2, y: cy - BOX / 2, width: BOX, height: spanHeight, rx: 3 }),
    s("text", { x: cx, y: cy + (sub ? -1 : 4), "text-anchor": "middle" }, label),
    sub ? s("text", { x: cx, y: cy + 11, "text-anchor": "middle", style: "font-size:9px" }, sub) : null);
}

function drawOp({ op, qubits, lo, hi }, cx, y) {
  const name = (op.name ?? "?").toLowerCase();
  const g = s("g", { class: `op op-${name}`, "data-op": name });
  const sub = (op.params ?? []).map(paramText).join(",");
  g.append(s("title", {}, `${op.name}${sub ? `(${sub})` : ""} on q${qubits.join(", q")}`));
  if (name === "measure") {
    qubits.forEach((q, i) => {
      const c = op.clbits?.[i];
      g.append(box(cx, y(q), "M", c === undefined ? "" : `c${c}`, "measure"));
    });
  } else if (name === "barrier") {
    g.append(s("line", { class: "barrier", x1: cx, x2: cx, y1: y(lo) - 14, y2: y(hi) + 14 }));
  } else if (op.body?.length || op.condition) {
    // Control flow (if / while / for / switch): one box over the qubits it touches.
    const tall = y(hi) - y(lo) + BOX;
    g.append(box(cx, y(lo), name, "", "gate", tall));
  } else if (name === "swap" || (name in TARGET_OF && qubits.length > 1)) {
    const target = name === "swap" ? "swap" : TARGET_OF[name];
    const nctrl = name === "swap" ? 0 : name === "cswap" ? qubits.length - 2 : (CONTROLS[name] ?? qubits.length - 1);
    const controls = qubits.slice(0, nctrl);
    const targets = qubits.slice(nctrl);
    g.append(s("line", { class: "link", x1: cx, x2: cx, y1: y(lo), y2: y(hi) }));
    for (const q of controls) g.append(s("circle", { class: "ctrl", cx, cy: y(q), r: 4 }));
    for (const q of targets) {
      if (target === "x") {
        g.append(s("circle", { cx, cy: y(q), r: 10, fill: "#fff", stroke: "currentColor" }));
        g.append(s("line", { class: "link", x1: cx - 10, x2: cx + 10, y1: y(q), y2: y(q) }));
        g.append(s("line", { class: "link", x1: cx, x2: cx, y1: y(q) - 10, y2: y(q) + 10 }));
      } else if (target === "z") {
        g.append(s("circle", { class: "ctrl", cx, cy: y(q), r: 4 }));
      } else if (target === "swap") {
        g.append(s("path", { class: "link", d: `M${cx - 6} ${y(q) - 6}l12 12M${cx + 6} ${y(q) - 6}l-12 12` }));
      } else {
        g.append(box(cx, y(q), target, sub));
      }
    }
  } else if (qubits.length > 1) {
    const tall = y(hi) - y(lo) + BOX;
    g.append(box(cx, y(lo), name, sub, "gate", tall));
  } else {
    g.append(box(cx, y(qubits[0]), name === "reset" ? "|0⟩" : name, sub));
  }
  return g;
}

/** A thin bar from `start` to `end` (seconds) on a 0..`span` axis, for the timeline. */
export function spanBar(start, end, span) {
  const scale = 1000 / (span || 1);
  const x = Math.min(1000, start * scale);
  const w = Math.max(2, (end - start) * scale);
  return s("svg", { viewBox: "0 0 1000 12", preserveAspectRatio: "none", "aria-hidden": "true" },
    s("rect", { x: 0, y: 5, width: 1000, height: 2, fill: "#d5d9df" }),
    s("rect", { class: "bar-fill", x, y: 1, width: Math.min(w, 1000 - x + 2), height: 10, rx: 2 }));
}
