"""Which runtime computes a frozen backbone's features, and how: ONNX Runtime or PyTorch.

Both run one network, `ImagesToFeatures`: the backbone's preprocessing and feature extractor, from
the project's uint8 images (N x H x W x 3) to pooled features (or, when the backbone's last stages
train, to the activations entering them: the output of its frozen part). PyTorch runs it eagerly; for ONNX
Runtime it is exported once (`export_onnx`, the torch.export-based exporter) for batches of
`EXPORT_BATCH` images, and the exported model is cached with the backbone's other artefacts
(`features.FeatureCache`).

`transfer.runtime` chooses: `auto` (the default) is ONNX Runtime when the device is the CPU, where
it computes the same features (within 1e-4) faster than PyTorch eager (BENCHMARKS.md), and
PyTorch on CUDA; `onnxruntime` and `torch` force one. Only frozen backbones' features use this:
fine-tuning always trains in PyTorch. Features are cached per runtime and version (`tag`), so two
runtimes' features are never mixed.
"""

import contextlib
import importlib.metadata
import warnings
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from transferlab.backbones import Backbone, split
from transferlab.errors import UserError

ONNX_RUNTIME, TORCH = "onnxruntime", "torch"
FALLBACK = "set transfer.runtime: torch in params.yaml to use PyTorch instead"
# The exported model's batch size, fixed: with a dynamic batch the export is slower (torch.export
# then reasons about symbolic shapes), and ONNX Runtime computes the same features as fast
# (BENCHMARKS.md). Other batch sizes are run in batches of this many, the last one padded.
EXPORT_BATCH = 32


def resolve(choice: str, device: torch.device) -> str:
    """The runtime that `transfer.runtime: choice` means on `device`."""
    if choice == "auto":
        return ONNX_RUNTIME if device.type == "cpu" else TORCH
    return choice


def tag(runtime: str) -> str:
    """The runtime and its version, e.g. `onnxruntime-1.32.0`: what features are cached under."""
    return f"{runtime}-{importlib.metadata.version(runtime)}"


class ImagesToFeatures(nn.Module):
    """N x H x W x 3 uint8 images -> pooled features: the network both runtimes run. With
    `trainable_stages` > 0, the backbone's frozen part alone (`backbones.split`): images -> the
    activations entering its last `trainable_stages` stages."""

    def __init__(self, backbone: Backbone, trainable_stages: int = 0):
        super().__init__()
        self.transform = backbone.transform
        self.features = split(backbone.features, trainable_stages)[0] if trainable_stages else backbone.features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(self.transform(images.permute(0, 3, 1, 2)))


def torch_features(
    backbone: Backbone, device: torch.device, trainable_stages: int = 0
) -> Callable[[np.ndarray], torch.Tensor]:
    """A batch of images -> features (`ImagesToFeatures`), on PyTorch."""
    network = ImagesToFeatures(backbone, trainable_stages).to(device).eval()

    @torch.inference_mode()
    def run(images: np.ndarray) -> torch.Tensor:
        return network(torch.as_tensor(images).to(device)).float().cpu()

    return run


def export_onnx(backbone: Backbone, height: int, width: int, trainable_stages: int = 0) -> bytes:
    """The ONNX model of `ImagesToFeatures` for batches of `EXPORT_BATCH` H x W images."""
    network = ImagesToFeatures(backbone, trainable_stages).cpu().eval()
    example = torch.zeros(EXPORT_BATCH, height, width, 3, dtype=torch.uint8)
    with _failing_as_user_error(f"cannot export {backbone.info.name} to ONNX"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on its own internals
        program = torch.onnx.export(
            network,
            (example,),
            input_names=["images"],
            output_names=["features"],
            dynamo=True,
            verbose=False,
        )
        return program.model_proto.SerializeToString()


def onnx_features(model: bytes, name: str) -> Callable[[np.ndarray], torch.Tensor]:
    """Images (any number) -> features, on ONNX Runtime's CPU provider, from an exported `model`:
    run in batches of `EXPORT_BATCH`, the last one padded with black images whose features are
    dropped (in eval mode each image's features depend on that image alone)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: its warnings are about its own graph rewrites
    with _failing_as_user_error(f"ONNX Runtime cannot load {name}'s exported model"):
        session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])

    def run(images: np.ndarray) -> torch.Tensor:
        batches = (_padded(images[start : start + EXPORT_BATCH]) for start in range(0, len(images), EXPORT_BATCH))
        with _failing_as_user_error(f"ONNX Runtime failed on {name}"):
            features = [session.run(None, {"images": batch})[0] for batch in batches]
        return torch.from_numpy(np.concatenate(features)[: len(images)])

    return run


def _padded(images: np.ndarray) -> np.ndarray:
    """A batch of up to `EXPORT_BATCH` images, filled up to `EXPORT_BATCH` with black ones."""
    missing = EXPORT_BATCH - len(images)
    return np.ascontiguousarray(np.pad(images, [(0, missing)] + [(0, 0)] * (images.ndim - 1)))


def is_onnx_model(value: object) -> bool:
    """Whether `value` is a well-formed serialised ONNX model (a cache entry's check)."""
    import onnx

    try:
        onnx.checker.check_model(onnx.load_from_string(value))
    except Exception:  # whatever is wrong with it, it is exported again
        return False
    return True


@contextlib.contextmanager
def _failing_as_user_error(what: str):
    """Turn any failure of the exporter or the runtime into one line that names the way out."""
    try:
        yield
    except UserError:
        raise
    except Exception as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"{what} ({reason}); {FALLBACK}") from None
