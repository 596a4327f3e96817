"""Autoscaling: AWS's scale-from-zero recipe for async endpoints, run unchanged with boto3.

The emulator's metric periods, alarms, cooldowns and scaling delays run on a fake clock: each
virtual minute is advanced once the emulator has nothing left to do in real time (its tick's
CloudWatch and Auto Scaling calls, and the inferences its instances can run).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

import boto3

from emulator.emulator_helpers import client_kwargs, runtime_client, wait_until
from emulator.test_control_plane import FAST, ROLE, call, sagemaker
from fakeclock import FakeClock, Settle
from sagemaker_async.emulator import EndpointConfig, InferenceRequest, LocalAsyncEndpoint


def settler(emu: LocalAsyncEndpoint) -> Settle:
    """Wait (in real time) until the emulator waits only for the clock."""

    async def settle() -> None:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + 60
        quiet = 0
        while quiet < 3:
            await asyncio.sleep(0)
            autoscaler = emu.autoscaler
            working = (autoscaler is not None and autoscaler.busy) or any(
                not (e.idle or (e.concurrency == 0 and e.in_flight == 0))
                for e in emu.endpoints.values()
            )
            if not working:
                quiet += 1
                continue
            quiet = 0
            await asyncio.sleep(0.005)
            if loop.time() > give_up:
                raise AssertionError("the emulator never settled")

    return settle


async def test_the_scale_from_zero_recipe(
    local_async_endpoint_factory: Any, embedded_s3: Any
) -> None:
    clock = FakeClock()
    emu: LocalAsyncEndpoint = await local_async_endpoint_factory(
        [],
        clock=clock,
        metrics_interval=60,
        deployment_seconds=0.05,
        scale_out_seconds=180,
        scale_in_seconds=120,
    )
    settle = settler(emu)
    endpoint_name = f"zero-{uuid.uuid4().hex[:8]}"
    sm = sagemaker(emu)
    await call(sm.create_model, ModelName=endpoint_name, PrimaryContainer={"Image": "echo"},
               ExecutionRoleArn=ROLE)  # fmt: skip
    await call(
        sm.create_endpoint_config,
        EndpointConfigName=endpoint_name,
        ProductionVariants=[
            {
                "VariantName": "variant1",
                "ModelName": endpoint_name,
                "InitialInstanceCount": 1,
                "InstanceType": "ml.m5.xlarge",
            }
        ],
        AsyncInferenceConfig={"OutputConfig": {}},
    )
    await call(sm.create_endpoint, EndpointName=endpoint_name, EndpointConfigName=endpoint_name)
    await call(
        sm.get_waiter("endpoint_in_service").wait, EndpointName=endpoint_name, WaiterConfig=FAST
    )

    # The recipe of the AWS documentation ("Autoscale an asynchronous endpoint"), with boto3.
    client = boto3.client("application-autoscaling", **client_kwargs(embedded_s3.url))
    cw_client = boto3.client("cloudwatch", **client_kwargs(embedded_s3.url))
    resource_id = "endpoint/" + endpoint_name + "/variant/" + "variant1"
    await call(
        client.register_scalable_target,
        ServiceNamespace="sagemaker",
        ResourceId=resource_id,
        ScalableDimension="sagemaker:variant:DesiredInstanceCount",
        MinCapacity=0,
        MaxCapacity=5,
    )
    await call(
        client.put_scaling_policy,
        PolicyName="Invocations-ScalingPolicy",
        ServiceNamespace="sagemaker",
        ResourceId=resource_id,
        ScalableDimension="sagemaker:variant:DesiredInstanceCount",
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": 5.0,
            "CustomizedMetricSpecification": {
                "MetricName": "ApproximateBacklogSizePerInstance",
                "Namespace": "AWS/SageMaker",
                "Dimensions": [{"Name": "EndpointName", "Value": endpoint_name}],
                "Statistic": "Average",
            },
            "ScaleInCooldown": 600,
            "ScaleOutCooldown": 300,
        },
    )
    step = await call(
        client.put_scaling_policy,
        PolicyName="HasBacklogWithoutCapacity-ScalingPolicy",
        ServiceNamespace="sagemaker",
        ResourceId=resource_id,
        ScalableDimension="sagemaker:variant:DesiredInstanceCount",
        PolicyType="StepScaling",
        StepScalingPolicyConfiguration={
            "AdjustmentType": "ChangeInCapacity",
            "MetricAggregationType": "Average",
            "Cooldown": 300,
            "StepAdjustments": [{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1}],
        },
    )
    alarm_name = f"{endpoint_name}-HasBacklogWithoutCapacity"
    await call(
        cw_client.put_metric_alarm,
        AlarmName=alarm_name,
        MetricName="HasBacklogWithoutCapacity",
        Namespace="AWS/SageMaker",
        Statistic="Average",
        EvaluationPeriods=2,
        DatapointsToAlarm=2,
        Threshold=1,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
        TreatMissingData="missing",
        Dimensions=[{"Name": "EndpointName", "Value": endpoint_name}],
        Period=60,
        AlarmActions=[step["PolicyARN"]],
    )

    async def observe() -> tuple[str, int, int, str]:
        described = await call(sm.describe_endpoint, EndpointName=endpoint_name)
        variant = described["ProductionVariants"][0]
        alarm = (await call(cw_client.describe_alarms, AlarmNames=[alarm_name]))["MetricAlarms"]
        return (
            described["EndpointStatus"],
            variant["CurrentInstanceCount"],
            variant["DesiredInstanceCount"],
            alarm[0]["StateValue"],
        )

    # No backlog: target tracking scales in to zero (15 datapoints under the target).
    endpoint = emu.endpoint(endpoint_name)
    minutes = await clock.run_until(lambda: endpoint.instances == 0, settle, step=60, limit=3600)
    assert 15 * 60 <= minutes <= 30 * 60
    assert (await observe())[:3] == ("InService", 0, 0)

    # 50 requests at zero instances: they wait in the queue.
    async with runtime_client(emu) as runtime:
        answers = [
            await runtime.invoke_endpoint_async(EndpointName=endpoint_name, Body=f"{i}".encode())
            for i in range(50)
        ]
    assert len({a["OutputLocation"] for a in answers}) == 50
    seen = [await observe()]
    for _ in range(60):  # virtual minutes; the loop ends long before
        await clock.advance(60, settle)
        seen.append(await observe())
        if emu.stats(endpoint_name).completed == 50 and seen[-1][1] == 0:
            break
    # The alarm fired while nothing served, the step policy added an instance (the endpoint
    # Updating meanwhile), all 50 completed, and after the scale-in delay: zero again.
    assert seen[0] == ("InService", 0, 0, "OK")
    assert ("Updating", 0, 1, "ALARM") in seen  # the alarm and its action, in one period
    assert any(current >= 1 for _, current, _, _ in seen)
    stats = emu.stats(endpoint_name)
    assert (stats.completed, stats.failed, stats.backlog) == (50, 0, 0)
    assert seen[-1] == ("InService", 0, 0, "OK")
    assert emu.autoscaler is not None
    causes = [a.cause for a in emu.autoscaler.activities if a.endpoint == endpoint_name]
    assert causes[1].startswith("step policy HasBacklogWithoutCapacity-ScalingPolicy")
    assert causes[-1].startswith("target-tracking policy Invocations-ScalingPolicy")

    # Datapoints fall on period boundaries, as CloudWatch's do.
    wall = clock.wall()
    points = (
        await call(
            cw_client.get_metric_statistics,
            Namespace="AWS/SageMaker",
            MetricName="ApproximateBacklogSize",
            Dimensions=[{"Name": "EndpointName", "Value": endpoint_name}],
            StartTime=dt.datetime.fromtimestamp(wall - 7200, dt.timezone.utc),
            EndTime=dt.datetime.fromtimestamp(wall + 60, dt.timezone.utc),
            Period=60,
            Statistics=["Maximum"],
        )
    )["Datapoints"]
    assert max(p["Maximum"] for p in points) == 50.0
    assert all(p["Timestamp"].timestamp() % 60 == 0 for p in points)
    for c in (client, cw_client, sm):
        c.close()


async def test_an_instance_that_leaves_finishes_its_inference_and_the_queue_waits(
    local_async_endpoint_factory: Any,
) -> None:
    release = asyncio.Event()

    async def held(request: InferenceRequest) -> bytes:
        await release.wait()
        return request.payload

    emu = await local_async_endpoint_factory(
        [EndpointConfig("leaving", model=held, max_concurrent_invocations_per_instance=1)],
        metrics_interval=None,
    )
    endpoint = emu.endpoint("leaving")
    async with runtime_client(emu) as runtime:
        for body in (b"first", b"second"):
            await runtime.invoke_endpoint_async(EndpointName="leaving", Body=body)
    await wait_until(lambda: endpoint.in_flight == 1)
    endpoint.set_instances(0)  # scaled in while its one instance works
    release.set()
    await wait_until(lambda: emu.stats("leaving").completed == 1)
    for _ in range(50):  # room for a worker that wrongly stayed to take the second one
        await asyncio.sleep(0)
    assert (endpoint.backlog, endpoint.in_flight, endpoint.concurrency) == (1, 0, 0)
    endpoint.set_instances(1)
    await emu.join()
    assert emu.stats("leaving").completed == 2


async def test_step_cooldowns_and_the_maximum_capacity(
    local_async_endpoint_factory: Any, embedded_s3: Any
) -> None:
    """An alarm that stays in ALARM runs its step policy once per period, but the policy acts
    only once per Cooldown, and never above MaxCapacity."""
    name = f"cooling-{uuid.uuid4().hex[:8]}"
    clock = FakeClock()
    emu: LocalAsyncEndpoint = await local_async_endpoint_factory(
        [EndpointConfig(name, instance_count=1)],
        clock=clock,
        metrics_interval=60,
        scale_out_seconds=0,
    )
    settle = settler(emu)
    aas = boto3.client("application-autoscaling", **client_kwargs(embedded_s3.url))
    cw = boto3.client("cloudwatch", **client_kwargs(embedded_s3.url))
    resource = f"endpoint/{name}/variant/AllTraffic"
    dimension = "sagemaker:variant:DesiredInstanceCount"
    await call(aas.register_scalable_target, ServiceNamespace="sagemaker", ResourceId=resource,
               ScalableDimension=dimension, MinCapacity=1, MaxCapacity=3)  # fmt: skip
    policy = await call(
        aas.put_scaling_policy,
        PolicyName="grow",
        ServiceNamespace="sagemaker",
        ResourceId=resource,
        ScalableDimension=dimension,
        PolicyType="StepScaling",
        StepScalingPolicyConfiguration={
            "AdjustmentType": "ChangeInCapacity",
            "Cooldown": 300,
            "StepAdjustments": [{"MetricIntervalUpperBound": 0, "ScalingAdjustment": 1}],
        },
    )
    # Breaching whenever the endpoint is idle: it stays in ALARM.
    await call(
        cw.put_metric_alarm,
        AlarmName=f"{name}-idle",
        MetricName="ApproximateBacklogSize",
        Namespace="AWS/SageMaker",
        Statistic="Maximum",
        EvaluationPeriods=1,
        Threshold=1,
        ComparisonOperator="LessThanThreshold",
        Dimensions=[{"Name": "EndpointName", "Value": name}],
        Period=60,
        AlarmActions=[policy["PolicyARN"]],
    )
    await clock.advance(20 * 60, settle)
    assert emu.autoscaler is not None
    steps = [(a.old, a.new, a.at) for a in emu.autoscaler.activities if a.endpoint == name]
    assert [(old, new) for old, new, _ in steps] == [(1, 2), (2, 3)]
    assert steps[1][2] - steps[0][2] == 300  # the Cooldown, in periods of 60 s
    assert emu.endpoint(name).instances == 3  # MaxCapacity: no third step
    alarm = (await call(cw.describe_alarms, AlarmNames=[f"{name}-idle"]))["MetricAlarms"][0]
    assert alarm["StateValue"] == "ALARM"
    aas.close()
    cw.close()
