"""Metrics, CloudWatch alarms and Application Auto Scaling for the emulator's endpoints.

Every ``interval`` seconds, on the boundaries of that period, the :class:`Autoscaler`:

1. samples each endpoint's backlog metrics and puts them to CloudWatch, stamped with the start
   of the period they close (so datapoints fall on period boundaries, as the service's do);
2. reads, from the moto that serves Application Auto Scaling and CloudWatch, the scalable
   targets registered for ``endpoint/NAME/variant/V`` (dimension
   ``sagemaker:variant:DesiredInstanceCount``), their policies, and the metric alarms on the
   emulator's metrics;
3. evaluates those alarms on its own samples, sets their state in CloudWatch when it changes,
   and runs the step-scaling policies an alarm in ALARM names in its actions (once per period
   while it stays there, as CloudWatch invokes Auto Scaling actions);
4. evaluates target-tracking policies as the alarms AWS creates for them do (scale out after 3
   datapoints above the target, in after 15 below 90 % of it);
5. clamps the result to the target's Min/MaxCapacity, honours cooldowns and suspended
   scaling, and asks the control plane for the new DesiredInstanceCount (instances follow after
   the emulator's ``scale_out_seconds``/``scale_in_seconds``).

All times are the given clock's, so a test runs the whole recipe in virtual minutes.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from .._clock import Clock
from ._control import ApiError, ControlPlane
from ._endpoint import EmulatedEndpoint
from ._metrics import METRICS_NAMESPACE, endpoint_metrics

__all__ = ["SCALABLE_DIMENSION", "Autoscaler", "ScalingActivity"]

_log = logging.getLogger("sagemaker_async.emulator")

#: The scalable dimension of an endpoint variant's instance count.
SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"
# The alarms AWS makes for a target-tracking policy: out after 3 datapoints above the target,
# in after 15 below 90 % of it (one datapoint per period).
_HIGH_DATAPOINTS = 3
_LOW_DATAPOINTS = 15
_LOW_FACTOR = 0.9
# Cooldowns when a policy sets none (Application Auto Scaling's defaults for SageMaker).
_DEFAULT_COOLDOWN = 300.0
# Samples kept per endpoint (a day of minutes): enough for any alarm window in use.
_KEPT_SAMPLES = 1440

_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "GreaterThanOrEqualToThreshold": lambda v, t: v >= t,
    "GreaterThanThreshold": lambda v, t: v > t,
    "LessThanThreshold": lambda v, t: v < t,
    "LessThanOrEqualToThreshold": lambda v, t: v <= t,
}


def _statistic(name: str, values: list[float]) -> float:
    if name == "Maximum":
        return max(values)
    if name == "Minimum":
        return min(values)
    if name == "Sum":
        return sum(values)
    if name == "SampleCount":
        return float(len(values))
    return sum(values) / len(values)  # Average


@dataclass(frozen=True)
class ScalingActivity:
    """One change of an endpoint's DesiredInstanceCount made by a policy.

    Attributes:
        endpoint: the endpoint name.
        old: DesiredInstanceCount before.
        new: DesiredInstanceCount asked for.
        cause: the policies (and alarm) that asked for it.
        at: the clock's wall time of the decision.
    """

    endpoint: str
    old: int
    new: int
    cause: str
    at: float


class Autoscaler:
    """Publishes the endpoints' metrics and applies alarms and scaling policies to them.

    Args:
        control: the control plane (its ``scale`` and ``capacity``).
        endpoints: the running endpoints by name (called on each tick).
        cloudwatch: an aiobotocore CloudWatch client (metrics, alarms).
        autoscaling: an aiobotocore Application Auto Scaling client, or None (metrics only).
        interval: the period, in seconds, of samples and ticks.
        clock: the clock of ticks and cooldowns.
    """

    def __init__(
        self,
        control: ControlPlane,
        endpoints: Callable[[], Mapping[str, EmulatedEndpoint]],
        *,
        cloudwatch: Any,
        autoscaling: Any,
        interval: float,
        clock: Clock,
    ) -> None:
        self._control = control
        self._endpoints = endpoints
        self._cloudwatch = cloudwatch
        self._autoscaling = autoscaling
        self._interval = interval
        self._clock = clock
        self._samples: dict[str, collections.deque[tuple[float, dict[str, float]]]] = {}
        self._last: dict[tuple[str, str], float] = {}  # (policy ARN, "out"/"in") -> time
        self._warned: set[str] = set()
        self._busy = False
        #: Every scaling decision, oldest first.
        self.activities: list[ScalingActivity] = []

    @property
    def busy(self) -> bool:
        """True while a tick runs (sampling, CloudWatch and Auto Scaling calls, decisions)."""
        return self._busy

    async def run(self) -> None:
        """Tick on every period boundary of the clock; runs until cancelled."""
        while True:
            now = self._clock.wall()
            boundary = (math.floor(now / self._interval) + 1) * self._interval
            await self._clock.sleep(boundary - now)
            self._busy = True
            try:
                await self.tick(boundary)
            except (ClientError, BotoCoreError) as exc:
                self._warn("aws", f"CloudWatch or Application Auto Scaling refused a call: {exc}")
            except Exception:  # one odd period must not stop metrics and scaling for good
                _log.exception("metrics and autoscaling: the period ending at %s failed", boundary)
            finally:
                self._busy = False

    def _warn(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            _log.warning("%s", message)

    async def tick(self, now: float) -> None:
        """Sample, publish, evaluate alarms and policies, scale: one period ending at ``now``."""
        endpoints = dict(self._endpoints())
        stamp = now - self._interval  # the start of the period this sample closes
        for name in list(self._samples):
            if name not in endpoints:
                del self._samples[name]
        for name, endpoint in endpoints.items():
            data = endpoint_metrics(endpoint)
            kept = self._samples.setdefault(name, collections.deque(maxlen=_KEPT_SAMPLES))
            kept.append((stamp, {d["MetricName"]: float(d["Value"]) for d in data}))
            when = dt.datetime.fromtimestamp(stamp, dt.timezone.utc)
            try:
                await self._cloudwatch.put_metric_data(
                    Namespace=METRICS_NAMESPACE,
                    MetricData=[{**d, "Timestamp": when} for d in data],
                )
            except (ClientError, BotoCoreError) as exc:
                self._warn("metrics", f"could not publish endpoint metrics to CloudWatch: {exc}")
        if self._autoscaling is not None and endpoints:
            await self._scale(now, endpoints)

    # -- reading what is registered ----------------------------------------------------------

    async def _all(self, client: Any, operation: str, key: str, **params: Any) -> list[Any]:
        items: list[Any] = []
        async for page in client.get_paginator(operation).paginate(**params):
            items.extend(page.get(key, []))
        return items

    async def _scale(self, now: float, endpoints: Mapping[str, EmulatedEndpoint]) -> None:
        targets = await self._all(
            self._autoscaling,
            "describe_scalable_targets",
            "ScalableTargets",
            ServiceNamespace="sagemaker",
        )
        ours = {}
        for target in targets:
            parts = target["ResourceId"].split("/")
            if (
                target["ScalableDimension"] == SCALABLE_DIMENSION
                and len(parts) == 4
                and parts[0] == "endpoint"
                and parts[2] == "variant"
                and parts[1] in endpoints
            ):
                ours[target["ResourceId"]] = target
        alarms = await self._all(
            self._cloudwatch, "describe_alarms", "MetricAlarms", AlarmTypes=["MetricAlarm"]
        )
        fired = await self._alarms(now, alarms, endpoints)
        if not ours:
            return
        policies = await self._all(
            self._autoscaling,
            "describe_scaling_policies",
            "ScalingPolicies",
            ServiceNamespace="sagemaker",
        )
        for resource, target in ours.items():
            mine = [p for p in policies if p["ResourceId"] == resource]
            self._decide(now, target, mine, fired)

    # -- alarms ------------------------------------------------------------------------------

    async def _alarms(
        self, now: float, alarms: list[dict[str, Any]], endpoints: Mapping[str, Any]
    ) -> dict[str, tuple[float, str]]:
        """Evaluate the alarms on the emulator's metrics; the actions to run, with the breach."""
        fired: dict[str, tuple[float, str]] = {}
        for alarm in alarms:
            dimensions = {d["Name"]: d["Value"] for d in alarm.get("Dimensions", [])}
            name = dimensions.get("EndpointName", "")
            if (
                alarm.get("Namespace") != METRICS_NAMESPACE
                or set(dimensions) != {"EndpointName"}
                or name not in endpoints
                or alarm.get("ComparisonOperator") not in _COMPARE
            ):
                continue
            state, value = self._evaluate(now, alarm, name)
            if state is None:
                continue
            if state != alarm.get("StateValue"):
                reason = (
                    f"The sagemaker-async emulator evaluated {alarm['MetricName']} of endpoint "
                    f"{name}: {state} (latest datapoint {value})."
                )
                await self._cloudwatch.set_alarm_state(
                    AlarmName=alarm["AlarmName"], StateValue=state, StateReason=reason
                )
                _log.info("alarm %s: %s", alarm["AlarmName"], state)
            if not alarm.get("ActionsEnabled", True) or value is None:
                continue
            actions = {"ALARM": "AlarmActions", "OK": "OKActions"}.get(state)
            for arn in alarm.get(actions, []) if actions else []:
                fired[arn] = (value - float(alarm["Threshold"]), alarm["AlarmName"])
        return fired

    def _evaluate(
        self, now: float, alarm: Mapping[str, Any], endpoint: str
    ) -> tuple[str | None, float | None]:
        """The alarm's state at ``now`` and its latest datapoint (None: no datapoint)."""
        period = float(alarm["Period"])
        periods = int(alarm["EvaluationPeriods"])
        needed = int(alarm.get("DatapointsToAlarm") or periods)
        samples = self._samples.get(endpoint, ())
        end = math.floor(now / period) * period
        values: list[float | None] = []
        for index in range(periods):  # newest first
            start = end - (index + 1) * period
            inside = [
                s[1][alarm["MetricName"]]
                for s in samples
                if start <= s[0] < start + period and alarm["MetricName"] in s[1]
            ]
            values.append(_statistic(alarm.get("Statistic", "Average"), inside) if inside else None)
        latest = next((v for v in values if v is not None), None)
        missing = alarm.get("TreatMissingData", "missing")
        if missing in ("breaching", "notBreaching"):
            breach = missing == "breaching"
            verdicts = [
                breach
                if v is None
                else _COMPARE[alarm["ComparisonOperator"]](v, alarm["Threshold"])
                for v in values
            ]
        else:
            verdicts = [
                _COMPARE[alarm["ComparisonOperator"]](v, alarm["Threshold"])
                for v in values
                if v is not None
            ]
            if not verdicts:
                return (None if missing == "ignore" else "INSUFFICIENT_DATA"), None
        return ("ALARM" if sum(verdicts) >= needed else "OK"), latest

    # -- policies ----------------------------------------------------------------------------

    def _decide(
        self,
        now: float,
        target: Mapping[str, Any],
        policies: list[dict[str, Any]],
        fired: Mapping[str, tuple[float, str]],
    ) -> None:
        name, variant = target["ResourceId"].split("/")[1::2]
        capacity = self._control.capacity(name)
        if capacity is None or capacity[0] != variant:
            return  # not InService (creating, scaling, updating): Auto Scaling waits
        current = capacity[1]
        low, high = int(target["MinCapacity"]), int(target["MaxCapacity"])
        outs: list[tuple[int, str, str]] = []  # (capacity, cause, policy ARN)
        ins: list[tuple[int, str, str]] = []
        tracking_total = tracking_in = 0
        for policy in policies:
            arn = policy["PolicyARN"]
            if policy["PolicyType"] == "StepScaling" and arn in fired:
                wanted = self._step(policy, current, *fired[arn])
                cooldown = float(
                    policy["StepScalingPolicyConfiguration"].get("Cooldown", _DEFAULT_COOLDOWN)
                )
                if wanted is None or now - self._last.get((arn, "step"), -math.inf) < cooldown:
                    continue
                cause = f"step policy {policy['PolicyName']} (alarm {fired[arn][1]})"
                (outs if wanted > current else ins).append((wanted, cause, arn))
            elif policy["PolicyType"] == "TargetTrackingScaling":
                wanted = self._tracking(policy, name, current)
                if wanted is None:
                    continue
                tracking_total += 1
                config = policy["TargetTrackingScalingPolicyConfiguration"]
                cause = f"target-tracking policy {policy['PolicyName']}"
                if wanted > current:
                    cooldown = float(config.get("ScaleOutCooldown", _DEFAULT_COOLDOWN))
                    if now - self._last.get((arn, "out"), -math.inf) >= cooldown:
                        outs.append((wanted, cause, arn))
                elif wanted < current and not config.get("DisableScaleIn", False):
                    cooldown = float(config.get("ScaleInCooldown", _DEFAULT_COOLDOWN))
                    if now - self._last.get((arn, "in"), -math.inf) >= cooldown:
                        tracking_in += 1
                        ins.append((wanted, cause, arn))
        suspended = target.get("SuspendedState", {})
        if suspended.get("DynamicScalingOutSuspended"):
            outs = []
        if suspended.get("DynamicScalingInSuspended"):
            ins = []
        if tracking_in < tracking_total:  # scale in only when every tracking policy agrees
            ins = [i for i in ins if not i[1].startswith("target-tracking")]
        chosen = max(outs) if outs else max(ins) if ins else None
        wanted = chosen[0] if chosen else current
        wanted = min(max(wanted, low), high)
        if wanted == current:
            return
        cause = chosen[1] if chosen else f"the scalable target's capacity {low}..{high}"
        try:
            self._control.scale(name, wanted)
        except ApiError as exc:  # it left InService meanwhile: the next period tries again
            _log.info("autoscaling %s: %s", name, exc.message)
            return
        for entry in outs if wanted > current else ins:
            kind = "step" if entry[1].startswith("step") else "out" if wanted > current else "in"
            self._last[(entry[2], kind)] = now
        self.activities.append(ScalingActivity(name, current, wanted, cause, now))
        _log.info("autoscaling %s: %d -> %d instances (%s)", name, current, wanted, cause)

    @staticmethod
    def _step(policy: Mapping[str, Any], current: int, breach: float, alarm: str) -> int | None:
        config = policy["StepScalingPolicyConfiguration"]
        for step in config.get("StepAdjustments", []):
            lower = step.get("MetricIntervalLowerBound", -math.inf)
            upper = step.get("MetricIntervalUpperBound", math.inf)
            if lower <= breach < upper:
                adjustment = int(step["ScalingAdjustment"])
                break
        else:
            return None
        kind = config.get("AdjustmentType", "ChangeInCapacity")
        if kind == "ExactCapacity":
            return adjustment
        if kind == "PercentChangeInCapacity":
            change = int(current * adjustment / 100)
            least = int(config.get("MinAdjustmentMagnitude", 1))
            if abs(change) < least:
                change = least if adjustment > 0 else -least
            return current + change
        return current + adjustment

    def _tracking(self, policy: Mapping[str, Any], endpoint: str, current: int) -> int | None:
        """The capacity a target-tracking policy asks for, or None (no breach, no metric)."""
        config = policy["TargetTrackingScalingPolicyConfiguration"]
        spec = config.get("CustomizedMetricSpecification")
        dimensions = {d["Name"]: d["Value"] for d in (spec or {}).get("Dimensions", [])}
        if (
            spec is None
            or spec.get("Namespace") != METRICS_NAMESPACE
            or dimensions != {"EndpointName": endpoint}
        ):
            self._warn(
                policy["PolicyARN"],
                f"autoscaling: policy {policy['PolicyName']} tracks a metric the emulator does "
                "not publish (it tracks the AWS/SageMaker backlog metrics of an endpoint, "
                "dimension EndpointName): ignored",
            )
            return None
        samples = [s[1].get(spec["MetricName"]) for s in self._samples.get(endpoint, ())]
        values = [v for v in samples if v is not None]
        target = float(config["TargetValue"])
        effective = max(current, 1)  # a per-instance metric divides by one at zero instances
        if len(values) >= _HIGH_DATAPOINTS and all(v > target for v in values[-_HIGH_DATAPOINTS:]):
            return math.ceil(effective * values[-1] / target)
        if len(values) >= _LOW_DATAPOINTS and all(
            v < _LOW_FACTOR * target for v in values[-_LOW_DATAPOINTS:]
        ):
            return math.ceil(effective * values[-1] / target) if current else None
        return None
