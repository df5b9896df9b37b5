"""qbus: a quantum-job bus on NATS JetStream."""

__version__ = "0.1.0"
