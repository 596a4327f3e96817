"""SageMaker's control plane for the emulated endpoints: models, endpoint configs, endpoints.

Served on the emulator's URL with the JSON protocol of the ``sagemaker`` service (``POST /``,
``X-Amz-Target: SageMaker.<Action>``), so ``boto3.client("sagemaker")`` aimed at the emulator
(``AWS_ENDPOINT_URL_SAGEMAKER``) creates, describes, updates, lists and deletes endpoints that
the runtime then serves.

moto's SageMaker backend is not the store: it has no UpdateEndpoint, its endpoints are
InService at once, and it lives in the moto server's process, which the emulator does not have
when it runs over another S3.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import botocore.session

from .._clock import Clock, SystemClock
from ._config import EndpointConfig
from ._endpoint import EmulatedEndpoint
from ._models import ContainerModel, ContainerUnavailableError, Model, resolve_model
from ._shapes import ShapeTypeError, constraint_errors, validation_message

__all__ = ["SERVED_ACTIONS", "ApiError", "ControlPlane", "NotOurs", "not_emulated"]

_log = logging.getLogger("sagemaker_async.emulator")

#: The default MaxConcurrentInvocationsPerInstance of an endpoint config that sets none
#: (the service picks its own value and documents none; see EndpointConfig).
_DEFAULT_CONCURRENCY = 4
#: ListEndpoints and the other lists return this many items when MaxResults is not given.
_DEFAULT_MAX_RESULTS = 10
#: ListTags answers this many tags when MaxResults is not given (the model's minimum).
_TAGS_PER_PAGE = 50
#: How long a container may take to pass ``GET /ping`` when the variant sets no
#: ContainerStartupHealthCheckTimeoutInSeconds (real seconds).
_DEFAULT_PING_TIMEOUT = 30.0


class ApiError(Exception):
    """An error answer of the control plane: HTTP status, AWS error code, message."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        self.code = code
        self.message = message
        self.status = status
        super().__init__(f"{code}: {message}")


class NotOurs(Exception):
    """The action names a resource the emulator does not hold: pass it to moto."""


@functools.cache
def _service_model() -> Any:
    return botocore.session.get_session().get_service_model("sagemaker")


def _check_input(action: str, params: Mapping[str, Any]) -> None:
    """The whole request against botocore's model: types first, then every constraint."""
    shape = _service_model().operation_model(action).input_shape
    try:
        errors = constraint_errors(shape, params)
    except ShapeTypeError as exc:
        raise ApiError("SerializationException", str(exc)) from None
    if errors:
        raise ApiError("ValidationException", validation_message(errors))


@dataclass(eq=False)
class _EndpointRecord:
    name: str
    arn: str
    config_name: str
    status: str
    created: float
    modified: float
    failure_reason: str | None = None
    deployed: dict[str, Any] | None = None  # the config document in service
    images: list[dict[str, Any]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    desired: int | None = None  # DesiredInstanceCount while a scaling runs
    pending: dict[str, Any] | None = None  # the config an UpdateEndpoint deploys


#: The SageMaker actions the emulator answers itself; others go to the embedded moto.
SERVED_ACTIONS = frozenset(
    {
        "CreateModel",
        "DescribeModel",
        "DeleteModel",
        "ListModels",
        "CreateEndpointConfig",
        "DescribeEndpointConfig",
        "DeleteEndpointConfig",
        "ListEndpointConfigs",
        "CreateEndpoint",
        "DescribeEndpoint",
        "UpdateEndpoint",
        "DeleteEndpoint",
        "ListEndpoints",
        "AddTags",
        "ListTags",
        "DeleteTags",
        "UpdateEndpointWeightsAndCapacities",
    }
)

#: Members that name what the emulator holds itself; moto, which answers the actions the
#: emulator does not serve, cannot see those resources.
_OWN_MEMBERS = frozenset({"EndpointName", "EndpointConfigName", "ModelName"})


def _names_own_resource(shape: Any, seen: set[str]) -> bool:
    if shape.name in seen:
        return False
    seen.add(shape.name)
    if shape.type_name == "structure":
        return any(
            name in _OWN_MEMBERS or _names_own_resource(member, seen)
            for name, member in shape.members.items()
        )
    if shape.type_name == "list":
        return _names_own_resource(shape.member, seen)
    if shape.type_name == "map":
        return _names_own_resource(shape.value, seen)
    return False


@functools.cache
def not_emulated() -> frozenset[str]:
    """Actions refused with one clear error: they act on the emulator's endpoints or models.

    Read from botocore's model: every action not served whose input names an endpoint, an
    endpoint configuration or a model at any depth, except the List, Describe and Search
    actions (moto answers those with nothing, which is true: none of it exists).
    """
    model = _service_model()
    return frozenset(
        name
        for name in model.operation_names
        if name not in SERVED_ACTIONS
        and not name.startswith(("List", "Describe", "Search"))
        and model.operation_model(name).input_shape is not None
        and _names_own_resource(model.operation_model(name).input_shape, set())
    )


class ControlPlane:
    """Models, endpoint configs and endpoints; endpoints start on the emulator's runtime.

    Args:
        endpoints: the runtime's endpoints by name; this object adds and removes entries.
        make_endpoint: builds an (unstarted) :class:`EmulatedEndpoint` for a config.
        region: the region in ARNs.
        account_id: the account in ARNs.
        deployment_seconds: how long an endpoint stays Creating, Updating or Deleting.
        images: container Image -> model (a callable or a :func:`resolve_model` spec); an
            Image not listed is resolved itself (``echo``, ``sleep:2``, ``http://...``).
        time_scale: multiplies ContainerStartupHealthCheckTimeoutInSeconds when given.
        scale_out_seconds: how long adding instances takes (the endpoint is Updating).
        scale_in_seconds: how long removing instances takes.
        clock: the clock of the scaling delays (a test's fake clock).
    """

    def __init__(
        self,
        endpoints: MutableMapping[str, EmulatedEndpoint],
        make_endpoint: Callable[[EndpointConfig, Model], EmulatedEndpoint],
        *,
        region: str,
        account_id: str,
        deployment_seconds: float = 1.0,
        images: Mapping[str, Model | str] | None = None,
        time_scale: float = 1.0,
        scale_out_seconds: float = 1.0,
        scale_in_seconds: float = 1.0,
        clock: Clock | None = None,
    ) -> None:
        self._running = endpoints
        self._make_endpoint = make_endpoint
        self._region = region
        self._account = account_id
        self._delay = deployment_seconds
        self._images = dict(images or {})
        self._time_scale = time_scale
        self._scale_out = scale_out_seconds
        self._scale_in = scale_in_seconds
        self._clock: Clock = clock or SystemClock()
        self._models: dict[str, dict[str, Any]] = {}
        self._configs: dict[str, dict[str, Any]] = {}
        self._endpoints: dict[str, _EndpointRecord] = {}
        self._tags: dict[str, dict[str, str]] = {}  # resource ARN -> key -> value
        self._retired: set[EmulatedEndpoint] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- names -------------------------------------------------------------------------------

    def _arn(self, kind: str, name: str) -> str:
        # The service writes resource names in ARNs in lower case.
        return f"arn:aws:sagemaker:{self._region}:{self._account}:{kind}/{name.lower()}"

    def _not_found(self, kind: str, what: str, name: str) -> ApiError:
        return ApiError("ValidationException", f'Could not find {what} "{self._arn(kind, name)}".')

    def _exists(self, kind: str, what: str, name: str) -> ApiError:
        return ApiError(
            "ValidationException",
            f'Cannot create already existing {what} "{self._arn(kind, name)}".',
        )

    # -- the emulator's own endpoints --------------------------------------------------------

    def register_static(self, config: EndpointConfig) -> None:
        """Record an endpoint the emulator was started with (InService, its config and model)."""
        now = time.time()
        image = config.model if isinstance(config.model, str) else _callable_name(config.model)
        self._models.setdefault(
            config.name,
            {
                "ModelName": config.name,
                "ModelArn": self._arn("model", config.name),
                "PrimaryContainer": {"Image": image},
                "CreationTime": now,
            },
        )
        document = _config_document(config)
        document.update(
            EndpointConfigName=config.name,
            EndpointConfigArn=self._arn("endpoint-config", config.name),
            CreationTime=now,
        )
        self._configs.setdefault(config.name, document)
        self._endpoints[config.name] = _EndpointRecord(
            name=config.name,
            arn=self._arn("endpoint", config.name),
            config_name=config.name,
            status="InService",
            created=now,
            modified=now,
            deployed=document,
            images=[{"SpecifiedImage": image, "ResolvedImage": image, "ResolutionTime": now}],
        )

    # -- dispatch ----------------------------------------------------------------------------

    async def handle(self, action: str, params: dict[str, Any]) -> dict[str, Any]:
        """Answer one action (one of :data:`SERVED_ACTIONS`), or raise :class:`ApiError`."""
        _check_input(action, params)
        method: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]] = getattr(
            self, "_" + re.sub(r"(?<!^)([A-Z])", r"_\1", action).lower()
        )
        return await method(params)

    # -- models ------------------------------------------------------------------------------

    async def _create_model(self, params: dict[str, Any]) -> dict[str, Any]:
        name = params["ModelName"]
        if name in self._models:
            raise self._exists("model", "model", name)
        containers = params.get("Containers") or []
        if "PrimaryContainer" not in params and not containers:
            raise ApiError(
                "ValidationException", "Either PrimaryContainer or Containers must be provided."
            )
        arn = self._arn("model", name)
        self._models[name] = {**params, "ModelArn": arn, "CreationTime": time.time()}
        self._tag(arn, self._models[name].pop("Tags", None))
        return {"ModelArn": arn}

    async def _describe_model(self, params: dict[str, Any]) -> dict[str, Any]:
        name = params["ModelName"]
        if name not in self._models:
            raise self._not_found("model", "model", name)
        return self._models[name]

    async def _delete_model(self, params: dict[str, Any]) -> dict[str, Any]:
        model = self._models.pop(params["ModelName"], None)
        if model is None:
            raise self._not_found("model", "model", params["ModelName"])
        self._tags.pop(model["ModelArn"], None)
        return {}

    async def _list_models(self, params: dict[str, Any]) -> dict[str, Any]:
        items = [
            {
                "ModelName": m["ModelName"],
                "ModelArn": m["ModelArn"],
                "CreationTime": m["CreationTime"],
            }
            for m in self._models.values()
        ]
        return _page(params, items, "Models", "ModelName", "CreationTime")

    # -- endpoint configs --------------------------------------------------------------------

    async def _create_endpoint_config(self, params: dict[str, Any]) -> dict[str, Any]:
        name = params["EndpointConfigName"]
        if name in self._configs:
            raise self._exists("endpoint-config", "endpoint configuration", name)
        variants = params["ProductionVariants"]
        if not variants:
            raise ApiError("ValidationException", "ProductionVariants must not be empty.")
        for variant in variants:
            model = variant.get("ModelName")
            if model is None:
                raise ApiError("ValidationException", "A production variant needs a ModelName.")
            if model not in self._models:
                raise self._not_found("model", "model", model)
        if "AsyncInferenceConfig" in params and len(variants) != 1:
            raise ApiError(
                "ValidationException",
                "An endpoint configuration with AsyncInferenceConfig takes one production "
                "variant in the emulator.",
            )
        arn = self._arn("endpoint-config", name)
        document = {**params, "EndpointConfigArn": arn, "CreationTime": time.time()}
        self._tag(arn, document.pop("Tags", None))
        self._configs[name] = document
        return {"EndpointConfigArn": arn}

    async def _describe_endpoint_config(self, params: dict[str, Any]) -> dict[str, Any]:
        name = params["EndpointConfigName"]
        if name not in self._configs:
            raise self._not_found("endpoint-config", "endpoint configuration", name)
        return self._configs[name]

    async def _delete_endpoint_config(self, params: dict[str, Any]) -> dict[str, Any]:
        # As on AWS, an endpoint using the config keeps running.
        name = params["EndpointConfigName"]
        document = self._configs.pop(name, None)
        if document is None:
            raise self._not_found("endpoint-config", "endpoint configuration", name)
        self._tags.pop(document["EndpointConfigArn"], None)
        return {}

    async def _list_endpoint_configs(self, params: dict[str, Any]) -> dict[str, Any]:
        items = [
            {
                "EndpointConfigName": c["EndpointConfigName"],
                "EndpointConfigArn": c["EndpointConfigArn"],
                "CreationTime": c["CreationTime"],
            }
            for c in self._configs.values()
        ]
        return _page(params, items, "EndpointConfigs", "EndpointConfigName", "CreationTime")

    # -- endpoints ---------------------------------------------------------------------------

    def _record(self, name: str) -> _EndpointRecord:
        record = self._endpoints.get(name)
        if record is None:
            raise self._not_found("endpoint", "endpoint", name)
        return record

    def _config_for(self, name: str) -> dict[str, Any]:
        if name not in self._configs:
            raise self._not_found("endpoint-config", "endpoint configuration", name)
        return self._configs[name]

    async def _create_endpoint(self, params: dict[str, Any]) -> dict[str, Any]:
        name = params["EndpointName"]
        if name in self._endpoints:
            raise self._exists("endpoint", "endpoint", name)
        document = self._config_for(params["EndpointConfigName"])
        now = time.time()
        record = _EndpointRecord(
            name=name,
            arn=self._arn("endpoint", name),
            config_name=params["EndpointConfigName"],
            status="Creating",
            created=now,
            modified=now,
        )
        self._endpoints[name] = record
        self._tag(record.arn, params.get("Tags"))
        record.task = self._spawn(self._deploy(record, document, creating=True))
        _log.info("control plane: endpoint %s Creating", name)
        return {"EndpointArn": record.arn}

    async def _update_endpoint(self, params: dict[str, Any]) -> dict[str, Any]:
        record = self._record(params["EndpointName"])
        if record.status == "Failed":
            # Our reading of the service: a failed endpoint is deleted and created again.
            raise ApiError(
                "ValidationException",
                f'Cannot update failed endpoint "{record.arn}": delete it and create it again.',
            )
        if record.status != "InService":
            raise ApiError(
                "ValidationException", f'Cannot update in-progress endpoint "{record.arn}".'
            )
        document = self._config_for(params["EndpointConfigName"])
        record.status = "Updating"
        record.pending = document
        record.modified = time.time()
        record.task = self._spawn(self._deploy(record, document, creating=False))
        _log.info("control plane: endpoint %s Updating", record.name)
        return {"EndpointArn": record.arn}

    async def _update_endpoint_weights_and_capacities(
        self, params: dict[str, Any]
    ) -> dict[str, Any]:
        record = self._record(params["EndpointName"])
        variants = [v["VariantName"] for v in (record.deployed or {}).get("ProductionVariants", [])]
        for wanted in params["DesiredWeightsAndCapacities"]:
            if wanted["VariantName"] not in variants:
                raise ApiError(
                    "ValidationException",
                    f"The variant name(s) [{wanted['VariantName']}] is/are not present in "
                    f'endpoint "{record.arn}".',
                )
        for wanted in params["DesiredWeightsAndCapacities"]:
            if "DesiredInstanceCount" in wanted:
                self.scale(record.name, wanted["DesiredInstanceCount"])
        return {"EndpointArn": record.arn}

    def capacity(self, name: str) -> tuple[str, int] | None:
        """``(variant name, DesiredInstanceCount)`` of an InService endpoint, else None."""
        record = self._endpoints.get(name)
        running = self._running.get(name)
        if record is None or running is None or record.status != "InService":
            return None
        assert record.deployed is not None
        return record.deployed["ProductionVariants"][0]["VariantName"], running.instances

    def scale(self, name: str, count: int) -> None:
        """Set endpoint ``name``'s DesiredInstanceCount; instances follow after a delay.

        The endpoint is ``Updating`` for ``scale_out_seconds`` (or ``scale_in_seconds``), then
        serves with ``count`` instances and is ``InService`` again.

        Raises:
            ApiError: no such endpoint, or it is not InService.
        """
        record = self._record(name)
        endpoint = self._running.get(name)
        if record.status != "InService" or endpoint is None:
            raise ApiError(
                "ValidationException", f'Cannot update in-progress endpoint "{record.arn}".'
            )
        if count == endpoint.instances:
            return
        delay = self._scale_out if count > endpoint.instances else self._scale_in
        record.desired = count
        record.status = "Updating"
        record.modified = time.time()
        record.task = self._spawn(self._rescale(record, endpoint, count, delay))
        _log.info(
            "control plane: endpoint %s Updating: %d -> %d instances",
            name,
            endpoint.instances,
            count,
        )

    async def _rescale(
        self, record: _EndpointRecord, endpoint: EmulatedEndpoint, count: int, delay: float
    ) -> None:
        await self._clock.sleep(delay)
        endpoint.set_instances(count)
        record.desired = None
        record.status = "InService"
        record.modified = time.time()
        _log.info("control plane: endpoint %s InService with %d instances", record.name, count)

    async def _delete_endpoint(self, params: dict[str, Any]) -> dict[str, Any]:
        record = self._record(params["EndpointName"])
        if record.status == "Deleting":
            return {}
        if record.task is not None:
            record.task.cancel()
        record.status = "Deleting"
        record.modified = time.time()
        endpoint = self._running.pop(record.name, None)
        record.task = self._spawn(self._remove(record, endpoint))
        _log.info("control plane: endpoint %s Deleting", record.name)
        return {}

    async def _describe_endpoint(self, params: dict[str, Any]) -> dict[str, Any]:
        record = self._record(params["EndpointName"])
        answer: dict[str, Any] = {
            "EndpointName": record.name,
            "EndpointArn": record.arn,
            "EndpointConfigName": record.config_name,
            "EndpointStatus": record.status,
            "CreationTime": record.created,
            "LastModifiedTime": record.modified,
        }
        if record.failure_reason:
            answer["FailureReason"] = record.failure_reason
        deployed = record.deployed
        if deployed is not None:
            running = self._running.get(record.name)
            status: list[dict[str, Any]] = []
            if record.desired is not None:
                status = [{"Status": "Updating", "StartTime": record.modified}]
            elif record.status == "Deleting":
                status = [{"Status": "Deleting", "StartTime": record.modified}]
            answer["ProductionVariants"] = [
                _variant_summary(
                    variant,
                    record.images,
                    current=running.instances if running is not None else 0,
                    desired=record.desired,
                    status=status,
                )
                for variant in deployed["ProductionVariants"]
            ]
            for key in ("AsyncInferenceConfig", "ExplainerConfig", "MetricsConfig"):
                if key in deployed:
                    answer[key] = deployed[key]
            capture = deployed.get("DataCaptureConfig")
            if capture is not None:
                answer["DataCaptureConfig"] = {
                    "EnableCapture": capture.get("EnableCapture", True),
                    "CaptureStatus": "Started" if capture.get("EnableCapture", True) else "Stopped",
                    "CurrentSamplingPercentage": capture["InitialSamplingPercentage"],
                    "DestinationS3Uri": capture["DestinationS3Uri"],
                    **({"KmsKeyId": capture["KmsKeyId"]} if "KmsKeyId" in capture else {}),
                }
        if record.pending is not None:  # UpdateEndpoint deploying a new config
            creating = [{"Status": "Creating", "StartTime": record.modified}]
            answer["PendingDeploymentSummary"] = {
                "EndpointConfigName": record.pending["EndpointConfigName"],
                "ProductionVariants": [
                    {
                        **_variant_summary(
                            variant,
                            [],
                            current=0,
                            desired=variant.get("InitialInstanceCount"),
                            status=creating,
                        ),
                        "InstanceType": variant.get("InstanceType"),
                    }
                    for variant in record.pending["ProductionVariants"]
                ],
                "StartTime": record.modified,
            }
        return answer

    async def _list_endpoints(self, params: dict[str, Any]) -> dict[str, Any]:
        status = params.get("StatusEquals")
        items = [
            {
                "EndpointName": r.name,
                "EndpointArn": r.arn,
                "CreationTime": r.created,
                "LastModifiedTime": r.modified,
                "EndpointStatus": r.status,
            }
            for r in self._endpoints.values()
            if status is None or r.status == status
        ]
        return _page(params, items, "Endpoints", "EndpointName", "CreationTime", "EndpointStatus")

    # -- tags --------------------------------------------------------------------------------

    def _tag(self, arn: str, tags: list[dict[str, str]] | None) -> None:
        held = self._tags.setdefault(arn, {})
        for tag in tags or ():
            held[tag["Key"]] = tag.get("Value", "")

    def _tagged(self, arn: str) -> dict[str, str]:
        """The tags of one of the emulator's resources.

        Raises:
            NotOurs: the ARN names no model, endpoint configuration or endpoint kind (a
                training job...): moto holds it.
            ApiError: no such model, endpoint configuration or endpoint.
        """
        kind = arn.split(":", 5)[-1].partition("/")[0]
        if kind not in ("model", "endpoint-config", "endpoint"):
            raise NotOurs(arn)
        held = {
            *(m["ModelArn"] for m in self._models.values()),
            *(c["EndpointConfigArn"] for c in self._configs.values()),
            *(r.arn for r in self._endpoints.values()),
        }
        if arn not in held:
            raise ApiError("ValidationException", f"Could not find resource {arn!r}.")
        return self._tags.setdefault(arn, {})

    async def _add_tags(self, params: dict[str, Any]) -> dict[str, Any]:
        tags = self._tagged(params["ResourceArn"])
        self._tag(params["ResourceArn"], params["Tags"])
        return {"Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}

    async def _delete_tags(self, params: dict[str, Any]) -> dict[str, Any]:
        tags = self._tagged(params["ResourceArn"])
        for key in params["TagKeys"]:
            tags.pop(key, None)
        return {}

    async def _list_tags(self, params: dict[str, Any]) -> dict[str, Any]:
        items = [{"Key": k, "Value": v} for k, v in self._tagged(params["ResourceArn"]).items()]
        return _slice(params, items, "Tags", _TAGS_PER_PAGE)

    # -- deployment --------------------------------------------------------------------------

    def _spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _endpoint_config(self, name: str, document: dict[str, Any]) -> tuple[EndpointConfig, str]:
        """The runtime config of endpoint ``name`` under ``document``, and the image it runs.

        Raises:
            ApiError: the models cannot be run (the text becomes the FailureReason).
        """
        variant = document["ProductionVariants"][0]
        model_doc = self._models.get(variant["ModelName"])
        if model_doc is None:
            raise ApiError(
                "Failed", f'Could not find model "{self._arn("model", variant["ModelName"])}".'
            )
        containers = model_doc.get("Containers") or []
        if "PrimaryContainer" in model_doc:
            containers = [model_doc["PrimaryContainer"]]
        if len(containers) != 1:
            raise ApiError(
                "Failed",
                f"Model {model_doc['ModelName']} has {len(containers)} containers; the emulator "
                "runs one.",
            )
        image = containers[0].get("Image")
        if not image:
            raise ApiError("Failed", f"Model {model_doc['ModelName']} has no container Image.")
        spec = self._images.get(image, image)
        try:
            model = resolve_model(spec)
        except ValueError:
            raise ApiError(
                "Failed",
                f"The emulator cannot run image {image!r}: use a built-in model name (echo, fail, "
                "sentiment, sleep:SECONDS), the http://host:port URL of a running model "
                "container, or map the image with LocalAsyncEndpoint(images={...}).",
            ) from None
        if isinstance(model, ContainerModel):
            given = variant.get("ContainerStartupHealthCheckTimeoutInSeconds")
            model.ping_timeout = (
                given * self._time_scale if given is not None else _DEFAULT_PING_TIMEOUT
            )
        async_config = document.get("AsyncInferenceConfig")
        if async_config is None:
            raise ApiError(
                "Failed",
                f"Endpoint configuration {document['EndpointConfigName']} has no "
                "AsyncInferenceConfig: the emulator serves asynchronous endpoints only.",
            )
        output = async_config.get("OutputConfig", {})
        notify = output.get("NotificationConfig", {})
        client = async_config.get("ClientConfig", {})
        config = EndpointConfig(
            name=name,
            model=model,
            s3_output_path=output.get("S3OutputPath"),
            s3_failure_path=output.get("S3FailurePath"),
            has_s3_failure_path="S3FailurePath" in output,
            instance_count=variant.get("InitialInstanceCount", 1),
            max_concurrent_invocations_per_instance=client.get(
                "MaxConcurrentInvocationsPerInstance", _DEFAULT_CONCURRENCY
            ),
            success_topic=notify.get("SuccessTopic"),
            error_topic=notify.get("ErrorTopic"),
            include_inference_response_in=tuple(notify.get("IncludeInferenceResponseIn", ())),
        )
        return config, image

    async def _deploy(
        self, record: _EndpointRecord, document: dict[str, Any], *, creating: bool
    ) -> None:
        """Creating/Updating -> InService (or Failed, or back to InService after an update)."""
        await asyncio.sleep(self._delay)
        endpoint: EmulatedEndpoint | None = None
        try:
            config, image = self._endpoint_config(record.name, document)
            endpoint = self._make_endpoint(config, config.model)  # type: ignore[arg-type]
            await endpoint.start()
        except (ApiError, ContainerUnavailableError, ValueError) as exc:
            if endpoint is not None:
                await endpoint.aclose()
            reason = exc.message if isinstance(exc, ApiError) else str(exc)
            if isinstance(exc, ContainerUnavailableError):
                variant = document["ProductionVariants"][0]["VariantName"]
                reason = (
                    f"The primary container for production variant {variant} did not pass the "
                    f"ping health check. Please check CloudWatch logs for this endpoint. ({exc})"
                )
            record.failure_reason = reason
            record.status = "Failed" if creating else "InService"  # an update rolls back
            record.pending = None
            record.modified = time.time()
            _log.warning("control plane: endpoint %s %s: %s", record.name, record.status, reason)
            return
        except asyncio.CancelledError:
            if endpoint is not None:
                await endpoint.aclose()
            raise
        old = self._running.get(record.name)
        self._running[record.name] = endpoint
        if old is not None:
            self._retire(old)
        now = time.time()
        record.deployed = document
        record.pending = None
        record.config_name = document["EndpointConfigName"]
        record.images = [{"SpecifiedImage": image, "ResolvedImage": image, "ResolutionTime": now}]
        record.failure_reason = None
        record.status = "InService"
        record.modified = now
        _log.info("control plane: endpoint %s InService (image %s)", record.name, image)

    def _retire(self, endpoint: EmulatedEndpoint) -> None:
        """Let a replaced endpoint finish what it accepted, then close it."""
        self._retired.add(endpoint)

        async def drain() -> None:
            try:
                await endpoint.join()
            finally:
                await endpoint.aclose()
                self._retired.discard(endpoint)

        self._spawn(drain())

    async def _remove(self, record: _EndpointRecord, endpoint: EmulatedEndpoint | None) -> None:
        try:
            if endpoint is not None:
                await endpoint.aclose()  # queued requests are dropped, as on deletion
            await asyncio.sleep(self._delay)
        finally:
            if self._endpoints.get(record.name) is record:
                del self._endpoints[record.name]
                self._tags.pop(record.arn, None)
        _log.info("control plane: endpoint %s deleted", record.name)

    # -- lifecycle ---------------------------------------------------------------------------

    async def join(self) -> None:
        """Wait until replaced endpoints have finished what they accepted."""
        for endpoint in list(self._retired):
            await endpoint.join()

    async def aclose(self) -> None:
        """Cancel deployments and drains; close replaced endpoints."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for endpoint in list(self._retired):
            await endpoint.aclose()
        self._retired.clear()


def _variant_summary(
    variant: Mapping[str, Any],
    images: list[dict[str, Any]],
    *,
    current: int,
    desired: int | None,
    status: list[dict[str, Any]],
) -> dict[str, Any]:
    """A ProductionVariantSummary of DescribeEndpoint for one variant of a config."""
    weight = variant.get("InitialVariantWeight", 1.0)
    summary: dict[str, Any] = {
        "VariantName": variant["VariantName"],
        "DeployedImages": images,
        "CurrentWeight": weight,
        "DesiredWeight": weight,
        "CurrentInstanceCount": current,
        "DesiredInstanceCount": desired if desired is not None else current,
        "VariantStatus": status,
    }
    for key in ("ManagedInstanceScaling", "RoutingConfig"):
        if key in variant:
            summary[key] = variant[key]
    return summary


def _callable_name(model: Any) -> str:
    return "python:" + getattr(model, "__qualname__", type(model).__qualname__)


def _config_document(config: EndpointConfig) -> dict[str, Any]:
    """The CreateEndpointConfig document of an endpoint the emulator was started with."""
    output: dict[str, Any] = {"S3OutputPath": config.output_path()}
    if config.has_s3_failure_path:
        output["S3FailurePath"] = config.failure_path()
    notify: dict[str, Any] = {}
    if config.success_topic:
        notify["SuccessTopic"] = config.success_topic
    if config.error_topic:
        notify["ErrorTopic"] = config.error_topic
    if config.include_inference_response_in:
        notify["IncludeInferenceResponseIn"] = list(config.include_inference_response_in)
    if notify:
        output["NotificationConfig"] = notify
    return {
        "ProductionVariants": [
            {
                "VariantName": "AllTraffic",
                "ModelName": config.name,
                "InitialInstanceCount": config.instance_count,
                "InstanceType": "ml.m5.large",
            }
        ],
        "AsyncInferenceConfig": {
            "ClientConfig": {
                "MaxConcurrentInvocationsPerInstance": (
                    config.max_concurrent_invocations_per_instance
                )
            },
            "OutputConfig": output,
        },
    }


def _page(
    params: Mapping[str, Any],
    items: list[dict[str, Any]],
    key: str,
    name_key: str,
    time_key: str,
    status_key: str | None = None,
) -> dict[str, Any]:
    """Filter, sort and page a List* answer (NameContains, time filters, SortBy, NextToken)."""
    contains = params.get("NameContains")
    if contains:
        items = [i for i in items if contains in i[name_key]]
    for bound, stamp, before in (
        ("CreationTimeBefore", "CreationTime", True),
        ("CreationTimeAfter", "CreationTime", False),
        ("LastModifiedTimeBefore", "LastModifiedTime", True),
        ("LastModifiedTimeAfter", "LastModifiedTime", False),
    ):
        if bound in params:
            moment = float(params[bound])
            items = [
                i
                for i in items
                if stamp in i and (i[stamp] < moment if before else i[stamp] > moment)
            ]
    sort_by = params.get("SortBy", "CreationTime")
    sort_key = {"Name": name_key, "CreationTime": time_key, "Status": status_key}.get(sort_by)
    items.sort(
        key=lambda i: i[sort_key or time_key],
        reverse=params.get("SortOrder", "Descending") == "Descending",
    )
    return _slice(params, items, key)


def _slice(
    params: Mapping[str, Any], items: list[dict[str, Any]], key: str, size: int | None = None
) -> dict[str, Any]:
    """One page of ``items`` (MaxResults, NextToken) under ``key``."""
    start = 0
    token = params.get("NextToken")
    if token:
        if not token.isdigit():
            raise ApiError("ValidationException", "Invalid pagination token.")
        start = int(token)
    size = int(params.get("MaxResults", size or _DEFAULT_MAX_RESULTS))
    answer: dict[str, Any] = {key: items[start : start + size]}
    if start + size < len(items):
        answer["NextToken"] = str(start + size)
    return answer
