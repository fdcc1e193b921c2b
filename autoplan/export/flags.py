"""The engines' documented flags: every flag an export writes is in one of these sets.

Each set comes with the page it is documented on (the tests parse the generated scripts
and check every emitted flag and environment variable against these sets):

* vLLM engine and server arguments (``--tensor-parallel-size``, ``--pipeline-parallel-size``,
  ``--max-model-len``, ``--max-num-seqs``, ``--gpu-memory-utilization``, ``--dtype``,
  ``--kv-cache-dtype {auto,fp8,fp8_e5m2,fp8_e4m3}``, ``--quantization fp8``,
  ``--distributed-executor-backend ray``, ``--kv-transfer-config``):
  https://docs.vllm.ai/en/v0.8.5/serving/engine_args.html
* vLLM ``--port`` and the NixlConnector KV-transfer config (``kv_connector``, ``kv_role``
  ``kv_producer``/``kv_consumer``, ``VLLM_NIXL_SIDE_CHANNEL_PORT``/``_HOST``, the toy proxy):
  https://docs.vllm.ai/en/stable/features/nixl_connector_usage.html
* ``VLLM_PP_LAYER_PARTITION``: comma-separated decoder layers per pipeline stage; its
  length must equal the PP size and its sum the model's layer count
  (``get_pp_indices`` in https://github.com/vllm-project/vllm/blob/main/vllm/distributed/utils.py,
  read through https://github.com/vllm-project/vllm/blob/main/vllm/envs.py)
* vLLM across nodes runs on a Ray cluster (``ray start --head`` / ``ray start --address``,
  ``--distributed-executor-backend ray``):
  https://docs.vllm.ai/en/latest/serving/parallelism_scaling.html
* vLLM on ROCm selects GPUs with ``HIP_VISIBLE_DEVICES``:
  https://docs.vllm.ai/en/v0.11.0/api/vllm/platforms/rocm.html
* SGLang server arguments (``--model-path``, ``--tp-size``, ``--pp-size``,
  ``--context-length``, ``--max-running-requests``, ``--mem-fraction-static``,
  ``--kv-cache-dtype {auto,fp8_e5m2,fp8_e4m3,bf16,...}``, ``--quantization fp8``,
  ``--nnodes``/``--node-rank``/``--dist-init-addr``, ``--disaggregation-mode``,
  ``--disaggregation-transfer-backend``, ``--disaggregation-bootstrap-port``):
  https://docs.sglang.io/advanced_features/server_arguments.html
  (source: https://github.com/sgl-project/sglang/blob/main/docs/advanced_features/server_arguments.md)
* SGLang PD disaggregation and its router line
  (``python -m sglang_router.launch_router --pd-disaggregation --prefill URL [BOOTSTRAP_PORT]
  --decode URL``): https://docs.sglang.io/advanced_features/pd_disaggregation.html and
  https://github.com/sgl-project/sglang/blob/main/docs/advanced_features/router.md
* SGLang's router over several colocated replicas (``python -m sglang_router.launch_router
  --worker-urls URL1 URL2 ... --host --port``, "Separate Launch (HTTP)"):
  https://github.com/sgl-project/sglang/blob/main/docs/advanced_features/router.md
* vLLM has no router across separate servers: several colocated replicas are independent
  ``vllm serve`` processes and an HTTP load balancer spreads requests over them ("External
  Load Balancing"):
  https://docs.vllm.ai/en/latest/serving/data_parallel_deployment.html
* ``SGLANG_PP_LAYER_PARTITION`` (same rules as vLLM's):
  https://github.com/sgl-project/sglang/blob/main/python/sglang/srt/distributed/utils.py
* vLLM expert parallelism and data-parallel attention (``--enable-expert-parallel``, EP =
  TP x DP; ``--data-parallel-size``): ``EngineArgs.add_cli_args`` in
  https://github.com/vllm-project/vllm/blob/main/vllm/engine/arg_utils.py (parallel group:
  ``--data-parallel-size``, ``--enable-expert-parallel``) and
  https://docs.vllm.ai/en/latest/serving/expert_parallel_deployment.html
* SGLang expert parallelism and DP attention (``--ep-size``, aliases
  ``--expert-parallel-size`` / ``--ep``; ``--dp-size``; ``--enable-dp-attention``; ``--tp-size``
  counts every GPU, attention TP = tp-size / dp-size): the ``ServerArgs`` fields ``ep_size``,
  ``dp_size``, ``enable_dp_attention`` of
  https://github.com/sgl-project/sglang/blob/main/python/sglang/srt/server_args.py
* Dynamo ``DynamoGraphDeployment`` in ``nvidia.com/v1beta1`` (``spec.components``), and
  TensorRT-LLM's ``trtllm-serve``: see the sections below, each with its sources and version.
"""

from __future__ import annotations

# ---------------------------------------------------------------- vLLM

# Several replicas are several independent `vllm serve` processes behind an HTTP load
# balancer ("External Load Balancing"); vLLM itself ships no router across them.
VLLM_DP_LB_DOC = ("https://docs.vllm.ai/en/latest/serving/data_parallel_deployment.html"
                  "#external-load-balancing")
VLLM_DOCS = (
    "https://docs.vllm.ai/en/v0.8.5/serving/engine_args.html",
    "https://docs.vllm.ai/en/stable/features/nixl_connector_usage.html",
    "https://docs.vllm.ai/en/latest/serving/parallelism_scaling.html",
    VLLM_DP_LB_DOC,
)
VLLM_FLAGS = frozenset({
    "--tensor-parallel-size", "--pipeline-parallel-size", "--max-model-len", "--max-num-seqs",
    "--gpu-memory-utilization", "--dtype", "--kv-cache-dtype", "--quantization",
    "--distributed-executor-backend", "--kv-transfer-config", "--port", "--host",
    "--data-parallel-size", "--enable-expert-parallel",
    # data parallelism over several hosts: one `vllm serve` per host, the first with the
    # API server, the others --headless, all meeting at the first host's RPC port
    # ("Data Parallel Deployment", multi-node, in
    # https://docs.vllm.ai/en/latest/serving/data_parallel_deployment.html)
    "--data-parallel-size-local", "--data-parallel-address", "--data-parallel-rpc-port",
    "--data-parallel-start-rank", "--headless",
})
VLLM_KV_CACHE_DTYPES = frozenset({"auto", "fp8", "fp8_e5m2", "fp8_e4m3"})
VLLM_DTYPES = frozenset({"auto", "half", "float16", "bfloat16", "float", "float32"})
VLLM_ENV = frozenset({"CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "VLLM_PP_LAYER_PARTITION",
                      "VLLM_NIXL_SIDE_CHANNEL_PORT", "VLLM_NIXL_SIDE_CHANNEL_HOST",
                      "RAY_ADDRESS"})
# ray start --head --port / ray start --address, as in the vLLM multi-node guide above.
RAY_START_FLAGS = frozenset({"--head", "--port", "--address"})

# ---------------------------------------------------------------- SGLang

SGLANG_DOCS = (
    "https://docs.sglang.io/advanced_features/server_arguments.html",
    "https://docs.sglang.io/advanced_features/pd_disaggregation.html",
    "https://github.com/sgl-project/sglang/blob/main/docs/advanced_features/router.md",
)
SGLANG_FLAGS = frozenset({
    "--model-path", "--tp-size", "--pp-size", "--context-length", "--max-running-requests",
    "--mem-fraction-static", "--dtype", "--kv-cache-dtype", "--quantization", "--host", "--port",
    "--nnodes", "--node-rank", "--dist-init-addr", "--disaggregation-mode",
    "--disaggregation-transfer-backend", "--disaggregation-bootstrap-port", "--page-size",
    "--ep-size", "--dp-size", "--enable-dp-attention",
})
SGLANG_KV_CACHE_DTYPES = frozenset({"auto", "fp8_e5m2", "fp8_e4m3", "bf16", "bfloat16"})
# --worker-urls URL ...: the router over several regular (colocated) servers, "Separate
# Launch (HTTP)" in https://github.com/sgl-project/sglang/blob/main/docs/advanced_features/router.md
SGLANG_ROUTER_FLAGS = frozenset({"--pd-disaggregation", "--prefill", "--decode", "--host",
                                 "--port", "--worker-urls"})
SGLANG_ENV = frozenset({"CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES",
                        "SGLANG_PP_LAYER_PARTITION"})

# ---------------------------------------------------------------- Dynamo

# dynamo.vllm takes vLLM's engine arguments plus its own --model and --disaggregation-mode.
DYNAMO_VLLM_FLAGS = frozenset((VLLM_FLAGS - {"--port", "--host", "--kv-transfer-config",
                                             "--distributed-executor-backend"})
                              | {"--model", "--disaggregation-mode"})

# ---------------------------------------------------------------- shared by the builders

# TP, PP, context length, concurrent sequences, memory fraction: each engine's flags for
# the sizes a plan gives a server (in that order; dynamo.vllm takes vLLM's)
VLLM_SIZING = ("--tensor-parallel-size", "--pipeline-parallel-size", "--max-model-len",
               "--max-num-seqs", "--gpu-memory-utilization")
SGLANG_SIZING = ("--tp-size", "--pp-size", "--context-length", "--max-running-requests",
                 "--mem-fraction-static")
# each engine's --kv-cache-dtype value for an fp8 KV cache
VLLM_KV_FP8 = "fp8"
SGLANG_KV_FP8 = "fp8_e4m3"

# ---------------------------------------------------------------- KV blocks

# Context lengths are rounded up to a whole KV block of the engine (limits.block_len):
# vLLM's default block size on CUDA is 16 (CacheConfig.DEFAULT_BLOCK_SIZE,
# https://docs.vllm.ai/en/stable/api/vllm/config/cache/); SGLang's is --page-size, which
# the exports set to 16 (as Dynamo's SGLang examples do); TensorRT-LLM's
# KvCacheConfig.tokens_per_block defaults to 32
# (https://nvidia.github.io/TensorRT-LLM/1.3.0rc27/llm-api/reference/KvCacheConfig.html).
VLLM_BLOCK = 16
SGLANG_PAGE = 16
TRTLLM_BLOCK = 32

# ---------------------------------------------------------------- TensorRT-LLM

# `trtllm-serve serve MODEL` options: the click definitions of
# tensorrt_llm/commands/serve.py (NVIDIA/TensorRT-LLM main, commit
# 00209af149e7774406881a37283dce303571eb11; documented for 1.0+ at
# https://nvidia.github.io/TensorRT-LLM/commands/trtllm-serve/trtllm-serve.html).
# --tp_size / --pp_size / --ep_size are aliases of --tensor_parallel_size /
# --pipeline_parallel_size / --moe_expert_parallel_size; --extra_llm_api_options of --config.
TRTLLM_DOCS = (
    ("https://github.com/NVIDIA/TensorRT-LLM/blob/00209af149e7774406881a37283dce303571eb11/"
     "tensorrt_llm/commands/serve.py"),
    "https://nvidia.github.io/TensorRT-LLM/1.3.0rc27/llm-api/reference/KvCacheConfig.html",
    ("https://github.com/NVIDIA/TensorRT-LLM/blob/main/docs/source/features/"
     "disagg-serving.md"),
)
TRTLLM_VERSION = "TensorRT-LLM main @ 00209af1 (1.3.0rc series)"
TRTLLM_FLAGS = frozenset({
    "--host", "--port", "--backend", "--tp_size", "--pp_size", "--ep_size",
    "--max_batch_size", "--max_num_tokens", "--max_seq_len",
    "--kv_cache_free_gpu_memory_fraction", "--extra_llm_api_options",
})
# `trtllm-serve disaggregated -c FILE`: its one option here
TRTLLM_DISAGG_FLAGS = frozenset({"-c"})
# A server over several hosts is one MPI world of as many processes as GPUs, each run
# through `trtllm-llmapi-launch` (examples/llm-api/llm_mgmn_trtllm_serve.sh of
# NVIDIA/TensorRT-LLM: "the number of MPI processes should be the same as the model
# world size"), started by OpenMPI's mpirun: -np processes, -H host:slots, -x exports an
# environment variable to every rank
# (https://docs.open-mpi.org/en/v5.0.x/man-openmpi/man1/mpirun.1.html).
TRTLLM_MPI_DOCS = (
    "https://github.com/NVIDIA/TensorRT-LLM/blob/main/examples/llm-api/llm_mgmn_trtllm_serve.sh",
    "https://docs.open-mpi.org/en/v5.0.x/man-openmpi/man1/mpirun.1.html",
)
MPIRUN_FLAGS = frozenset({"-np", "-H", "-x"})
# The LLM-API fields the extra-options YAML sets (LlmArgs / KvCacheConfig /
# CacheTransceiverConfig; ``enable_attention_dp`` and ``moe_expert_parallel_size`` are
# fields of BaseLlmArgs in tensorrt_llm/llmapi/llm_args.py of NVIDIA/TensorRT-LLM main, and
# ``Mapping`` runs attention at TP 1 per rank with attention DP,
# https://github.com/NVIDIA/TensorRT-LLM/blob/main/tensorrt_llm/mapping.py), and the
# disaggregated server's config keys
# (hostname, port, backend, context_servers / generation_servers with num_instances, urls).
TRTLLM_LLM_API_KEYS = frozenset({
    "tensor_parallel_size", "pipeline_parallel_size", "moe_expert_parallel_size",
    "max_batch_size", "max_num_tokens", "max_seq_len", "kv_cache_config",
    "cache_transceiver_config", "disable_overlap_scheduler", "enable_attention_dp",
})
TRTLLM_KV_CACHE_KEYS = frozenset({"dtype", "free_gpu_memory_fraction"})
TRTLLM_KV_DTYPES = frozenset({"auto", "fp8", "nvfp4"})
TRTLLM_DISAGG_KEYS = frozenset({"hostname", "port", "backend", "context_servers",
                                "generation_servers"})
TRTLLM_DISAGG_SERVER_KEYS = frozenset({"num_instances", "urls"})
TRTLLM_ENV = frozenset({"CUDA_VISIBLE_DEVICES"})

# ---------------------------------------------------------------- Dynamo v1beta1

# DynamoGraphDeployment nvidia.com/v1beta1 (the storage version; v1alpha1 is served through
# a conversion webhook): spec.components is a list of DynamoComponentDeploymentSharedSpec
# (name, type frontend|worker|prefill|decode, replicas, multinode.nodeCount, podTemplate
# with a container named "main"); spec.backendFramework sglang|vllm|trtllm. Sources:
# deploy/operator/api/v1beta1/dynamographdeployment_types.go and
# dynamocomponentdeployment_types.go (ai-dynamo/dynamo main, commits 0fddc01b / 006b6e10)
# and the examples/backends/{vllm,sglang,trtllm}/deploy/v1beta1/*.yaml (runtime 1.3.x).
DYNAMO_API_VERSION = "nvidia.com/v1beta1"
DYNAMO_V1BETA1_DOCS = (
    ("https://github.com/ai-dynamo/dynamo/blob/main/deploy/operator/api/v1beta1/"
     "dynamographdeployment_types.go"),
    ("https://github.com/ai-dynamo/dynamo/blob/main/deploy/operator/api/v1beta1/"
     "dynamocomponentdeployment_types.go"),
    "https://github.com/ai-dynamo/dynamo/blob/main/examples/backends/vllm/deploy/v1beta1/disagg.yaml",
    ("https://github.com/ai-dynamo/dynamo/blob/main/examples/backends/sglang/deploy/v1beta1/"
     "disagg.yaml"),
    ("https://github.com/ai-dynamo/dynamo/blob/main/examples/backends/trtllm/deploy/v1beta1/"
     "disagg-multinode.yaml"),
)
DYNAMO_VERSION = "ai-dynamo/dynamo main (v1beta1 CRD; runtime images 1.3.x)"
DYNAMO_BACKENDS = ("vllm", "sglang", "trtllm")
DYNAMO_SPEC_FIELDS = frozenset({"backendFramework", "components", "env", "annotations",
                                "labels"})
DYNAMO_COMPONENT_FIELDS = frozenset({"name", "type", "replicas", "multinode", "podTemplate"})
DYNAMO_COMPONENT_TYPES = frozenset({"frontend", "worker", "prefill", "decode"})
# dynamo.sglang takes SGLang's server arguments; dynamo.trtllm its own (--model-path,
# --served-model-name, --extra-engine-args YAML of LLM-API fields, --disaggregation-mode).
DYNAMO_SGLANG_FLAGS = frozenset((SGLANG_FLAGS - {"--port", "--nnodes", "--node-rank",
                                                 "--dist-init-addr"})
                                | {"--served-model-name"})
DYNAMO_TRTLLM_FLAGS = frozenset({"--model-path", "--served-model-name", "--extra-engine-args",
                                 "--disaggregation-mode"})

# ---------------------------------------------------------------- engine limits

# What an engine refuses at start-up: export refuses it too, naming the pool and the rule.
# vLLM's NixlConnector: a kv_consumer (decode) with pipeline_parallel_size > 1 raises
# NotImplementedError in NixlBaseConnectorWorker, and a decode worker rejects handshakes
# from a producer's pp_rank > 0 ("does not support PP-disaggregated KV transfer").
_NIXL_PP = {"engine": "vLLM", "roles": ("prefill", "decode"), "max_pp": 1,
            "rule": "vLLM's NixlConnector does not support pipeline parallelism (PP > 1) "
                    "on either side of a disaggregated KV transfer",
            "source": "https://github.com/vllm-project/vllm/issues/52913, "
                      "https://github.com/vllm-project/vllm/pull/53360"}
ENGINE_LIMITS: dict[str, tuple[dict, ...]] = {"vllm": (_NIXL_PP,), "dynamo-vllm": (_NIXL_PP,)}
