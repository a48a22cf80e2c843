"""The Open Inference Protocol over gRPC (`inference.GRPCInferenceService`: ServerLive, ServerReady,
ModelReady, ServerMetadata, ModelMetadata, ModelInfer) beside the HTTP app, on the same event loop
and the same SearchService: the same model `splip`, micro-batcher, limits, back-pressure, versions,
metrics and access log as /v2 over HTTP.

ModelInfer takes one input, `image` (BYTES [N]) or `pixels` (FP32 [N, 3, S, S]), in
`raw_input_contents` (what tritonclient.grpc sends) or `contents`; parameters `k` (int64),
`modality` (string), `metadata` (bool: add output `metadata`, each hit's stored record as JSON
text); outputs come back in `raw_output_contents`. Refusals carry the protocol's status codes with
a message naming the problem: INVALID_ARGUMENT (datatype, shape, input, parameter, bad image),
NOT_FOUND (model or version), RESOURCE_EXHAUSTED (a message over --max-body-mb), UNAVAILABLE (queue
full or shutting down: retry), UNAUTHENTICATED (no or wrong `authorization: Bearer <token>`
metadata; ServerLive stays open like /v2/health/live). The request id is the client's
`x-request-id` metadata when well formed, returned in the trailing metadata. Each RPC counts in
the HTTP metrics under its method path (e.g. /inference.GRPCInferenceService/ModelInfer) with the
HTTP status of its gRPC code.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import numpy as np

from splip_engine.data.images import ImageDecodeError
from splip_engine.errors import SpLIPError
from splip_engine.serve.auth import bearer_matches, token_digest
from splip_engine.serve.batcher import ServiceUnavailable
from splip_engine.serve.errors import RequestError
from splip_engine.serve.infer import SERVER_NAME, SERVER_VERSION, check_model, describe_model, run_infer
from splip_engine.serve.observe import log_access, request_id
from splip_engine.serve.oip_proto import METHODS, SERVICE, message
from splip_engine.serve.service import SearchService, index_version
from splip_engine.serve.tensors import MODEL_NAME, check_infer_request, check_input, output_tensors, tensor_bytes

try:
    import grpc
except ImportError as e:  # optional dependency: the `serve` extra
    raise SpLIPError("serving gRPC needs grpcio: pip install 'splip-engine[serve]'") from e

logger = logging.getLogger(__name__)

OPEN_METHODS = frozenset({"ServerLive"})
_HTTP_STATUS = {grpc.StatusCode.OK: 200, grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.UNAUTHENTICATED: 401,
                grpc.StatusCode.NOT_FOUND: 404, grpc.StatusCode.FAILED_PRECONDITION: 409,
                grpc.StatusCode.RESOURCE_EXHAUSTED: 413, grpc.StatusCode.UNAVAILABLE: 503,
                grpc.StatusCode.CANCELLED: 499}
_CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 422: grpc.StatusCode.INVALID_ARGUMENT, 404: grpc.StatusCode.NOT_FOUND,
          409: grpc.StatusCode.FAILED_PRECONDITION, 413: grpc.StatusCode.RESOURCE_EXHAUSTED}
_CONTENTS = {"BYTES": "bytes_contents", "FP32": "fp32_contents"}  # the `contents` field of each datatype


class _Refused(Exception):
    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code


def _refusal(exc: Exception) -> _Refused:
    """The gRPC status and message of an exception raised while answering."""
    if isinstance(exc, _Refused):
        return exc
    if isinstance(exc, RequestError):
        return _Refused(_CODES.get(exc.status, grpc.StatusCode.INVALID_ARGUMENT), str(exc))
    if isinstance(exc, ServiceUnavailable):
        return _Refused(grpc.StatusCode.UNAVAILABLE, str(exc))
    if isinstance(exc, ImageDecodeError):
        return _Refused(grpc.StatusCode.INVALID_ARGUMENT, f"bad image: {exc}")
    logger.exception("gRPC request failed", exc_info=exc)
    return _Refused(grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__}); see the server log")


class GrpcInference:
    """The six RPCs over `service`; `handler()` is what a grpc.aio server registers."""

    def __init__(self, service: SearchService, token: str | None = None):
        self.service = service
        self._expected = None if token is None else token_digest(token)

    def handler(self) -> grpc.GenericRpcHandler:
        handlers = {}
        for method, (request_type, response_type) in METHODS.items():
            answer = getattr(self, method)
            handlers[method] = grpc.unary_unary_rpc_method_handler(
                self._observed(method, answer), request_deserializer=message(request_type).FromString,
                response_serializer=message(response_type).SerializeToString)
        return grpc.method_handlers_generic_handler(SERVICE, handlers)

    def _observed(self, method: str, answer: Callable[[Any, dict], Awaitable[Any]]):
        """`answer` with auth, status mapping, metrics and the access log around it."""
        path = f"/{SERVICE}/{method}"

        async def handle(request, context: grpc.aio.ServicerContext):
            start = time.perf_counter()
            metadata = {key: value for key, value in context.invocation_metadata() or ()}
            rid = request_id(str(metadata.get("x-request-id", "")))
            facts: dict[str, Any] = {}
            code = grpc.StatusCode.OK
            try:
                context.set_trailing_metadata((("x-request-id", rid),))
                self._authenticate(method, metadata)
                return await answer(request, facts)
            except asyncio.CancelledError:  # the client left (or the deadline passed)
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception as e:  # every refusal becomes a status; the loop keeps serving
                refusal = _refusal(e)
                code = refusal.code
                await context.abort(code, str(refusal))
            finally:
                seconds = time.perf_counter() - start
                status = _HTTP_STATUS.get(code, 500)
                self.service.metrics.observe_response(path, status, seconds)
                log_access(rid, "gRPC", path, status, seconds, request.ByteSize(), context.peer(), facts,
                           grpc_status=code.name)

        return handle

    def _authenticate(self, method: str, metadata: dict[str, Any]) -> None:
        if self._expected is None or method in OPEN_METHODS:
            return
        header = metadata.get("authorization")
        if header is None:
            raise _Refused(grpc.StatusCode.UNAUTHENTICATED,
                           "authentication required: send metadata authorization: Bearer <token>")
        if not bearer_matches(header.encode("latin-1") if isinstance(header, str) else header, self._expected):
            raise _Refused(grpc.StatusCode.UNAUTHENTICATED,
                           "invalid token: the authorization metadata does not hold this server's bearer token")

    # ------------------------------------------------------------------ the RPCs
    async def ServerLive(self, request, facts):  # noqa: N802 -- the protocol's method names
        return message("ServerLiveResponse")(live=self.service.is_live())

    async def ServerReady(self, request, facts):  # noqa: N802
        return message("ServerReadyResponse")(ready=self.service.is_ready())

    async def ModelReady(self, request, facts):  # noqa: N802
        check_model(self.service, request.name, request.version)
        return message("ModelReadyResponse")(ready=self.service.is_ready())

    async def ServerMetadata(self, request, facts):  # noqa: N802
        return message("ServerMetadataResponse")(name=SERVER_NAME, version=SERVER_VERSION, extensions=[])

    async def ModelMetadata(self, request, facts):  # noqa: N802
        check_model(self.service, request.name, request.version)
        described = describe_model(self.service)
        response = message("ModelMetadataResponse")(name=described["name"], versions=described["versions"],
                                                    platform=described["platform"])
        for field in ("inputs", "outputs"):
            for tensor in described[field]:
                getattr(response, field).add(name=tensor["name"], datatype=tensor["datatype"], shape=tensor["shape"])
        return response

    async def ModelInfer(self, request, facts):  # noqa: N802
        service = self.service
        check_model(service, request.model_name, request.model_version)
        service.batcher.raise_if_full()  # shed load before decoding
        settings = service.settings
        parsed = check_infer_request(request.id or None, _parameters(request.parameters), _tensors(request),
                                     [{"name": o.name} for o in request.outputs] or None,
                                     service.encoder.image_size, settings.max_batch, settings.max_k)
        answer, metadata = await run_infer(service, parsed, facts)
        response = message("ModelInferResponse")(model_name=MODEL_NAME, model_version=str(index_version(answer.index)),
                                                 id=request.id)
        response.parameters["k"].int64_param = parsed.k
        response.parameters["modality"].string_param = parsed.modality
        tensors = output_tensors(answer.embeddings, answer.ids, answer.scores, metadata)
        for name in parsed.outputs:
            datatype, array = tensors[name]
            response.outputs.add(name=name, datatype=datatype, shape=list(array.shape))
            response.raw_output_contents.append(tensor_bytes(datatype, array))
        return response


def _parameters(parameters) -> dict[str, Any]:
    """A protobuf map<string, InferParameter> as a dict of Python values."""
    return {name: getattr(value, value.WhichOneof("parameter_choice")) if value.WhichOneof("parameter_choice")
            else None for name, value in parameters.items()}


def _tensors(request) -> dict[str, tuple[str, list[int], Any]]:
    """name -> (datatype, shape, data: raw bytes or a list of elements) of every input."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise RequestError(400, f"raw_input_contents holds {len(raw)} tensors for {len(request.inputs)} inputs; "
                                "send one per input, in input order")
    out: dict[str, tuple[str, list[int], Any]] = {}
    for position, tensor in enumerate(request.inputs):
        shape = [int(d) for d in tensor.shape]
        check_input(tensor.name, tensor.datatype, shape, out)
        if raw:
            data: Any = bytes(raw[position])
        else:
            field = _CONTENTS.get(tensor.datatype)
            data = list(getattr(tensor.contents, field)) if field else []
            if tensor.datatype == "FP32":
                data = np.asarray(data, dtype=np.float32)
        out[tensor.name] = (tensor.datatype, shape, data)
    return out


def attach_grpc(app: Any, host: str, port: int, token: str | None = None) -> None:
    """Serve GRPCInferenceService on host:port (0: a free port, stored in `app.state.grpc_port`)
    from the app's startup (after the service started) to its shutdown (before the service stops;
    in-flight RPCs get settings.graceful_shutdown_s)."""
    service: SearchService = app.state.service
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app_: Any):
        async with inner(app_) as state:
            server = grpc.aio.server(options=[("grpc.max_receive_message_length", service.settings.max_body_bytes),
                                              ("grpc.max_send_message_length", -1), ("grpc.so_reuseport", 0)])
            server.add_generic_rpc_handlers((GrpcInference(service, token).handler(),))
            bound = server.add_insecure_port(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
            if bound == 0:
                raise SpLIPError(f"cannot listen for gRPC on {host}:{port} (in use, or not an address of this host); "
                                 "pass another --grpc-port")
            await server.start()
            app.state.grpc_port = bound
            logger.info("gRPC (Open Inference Protocol) on %s:%d", host, bound)
            try:
                yield state
            finally:
                await server.stop(service.settings.graceful_shutdown_s)

    app.router.lifespan_context = lifespan
