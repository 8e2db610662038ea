"""Kafka at the edge: client configs, topic set-up, a publisher that waits for delivery, a local broker.

At-least-once: the producer is idempotent (acks=all) and `EventPublisher.publish` returns only once
the broker has the event. Consumers neither auto-commit nor auto-store offsets: the worker handles an
event, then stores and commits its offset, so a crash in between replays the event. Handlers must
therefore be idempotent. Events are serialised by `salesflow.sales.contract`, never here.

- `clients`: producer/consumer/admin configs, `ensure_topics`, `broker_reachable`, `consumer_lag`
- `publisher`: `EventPublisher`
- `broker`: `LocalBroker` (Tansu in memory) and `run_broker`
"""

from salesflow.kafka.broker import LocalBroker, run_broker
from salesflow.kafka.clients import (
    admin_config,
    broker_reachable,
    consumer_config,
    consumer_lag,
    ensure_topics,
    producer_config,
    topic_end,
)
from salesflow.kafka.publisher import EventPublisher

__all__ = [
    "EventPublisher",
    "LocalBroker",
    "admin_config",
    "broker_reachable",
    "consumer_config",
    "consumer_lag",
    "ensure_topics",
    "producer_config",
    "run_broker",
    "topic_end",
]
