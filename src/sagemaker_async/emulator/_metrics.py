"""The async-inference metrics SageMaker publishes to CloudWatch, from the emulator's queues."""

from __future__ import annotations

from typing import Any

from ._endpoint import EmulatedEndpoint

__all__ = ["METRICS_NAMESPACE", "endpoint_metrics"]

#: The namespace of the service's endpoint metrics.
METRICS_NAMESPACE = "AWS/SageMaker"


def endpoint_metrics(endpoint: EmulatedEndpoint) -> list[dict[str, Any]]:
    """One endpoint's MetricData: the backlog metrics of an async endpoint, as documented.

    ApproximateBacklogSize counts the requests queued or being processed;
    ApproximateBacklogSizePerInstance divides it by the instances (by 1 at zero instances);
    ApproximateAgeOfOldestRequest is the age of the oldest queued request, in seconds;
    HasBacklogWithoutCapacity is 1 when requests wait and the endpoint has no instance.
    """
    stats = endpoint.stats()
    instances = endpoint.instances
    backlog = stats.backlog + stats.in_flight
    dimensions = [{"Name": "EndpointName", "Value": endpoint.name}]
    values = [
        ("ApproximateBacklogSize", float(backlog), "Count"),
        ("ApproximateBacklogSizePerInstance", backlog / max(instances, 1), "Count"),
        ("ApproximateAgeOfOldestRequest", stats.oldest_request_age_seconds, "Seconds"),
        ("HasBacklogWithoutCapacity", float(stats.backlog > 0 and instances == 0), "Count"),
    ]
    return [
        {"MetricName": name, "Dimensions": dimensions, "Value": value, "Unit": unit}
        for name, value, unit in values
    ]
