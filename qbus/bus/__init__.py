"""The bus: config, subjects, the nats-server launcher, connection and provisioning, the
continuous pull consumer and the stage runner (the one place that acks), job state, blobs.
"""
