"""Model files read back: the one place that decides, from a model file, which kind of model it
holds (`kinds`, `transfer_kinds`) and rebuilds it with its weights."""

from pathlib import Path

from transferlab import backbones
from transferlab.errors import UserError
from transferlab.kinds import Model, TinyVGGModel
from transferlab.torchfiles import load_torch
from transferlab.transfer_kinds import LoadBackbone, kind_of


def from_model_file(model_file: dict, load_backbone: LoadBackbone = backbones.load) -> Model:
    """The model a model file holds, rebuilt with its weights (evaluation mode)."""
    classes, config = model_file["classes"], model_file["config"]
    if model_file["kind"] == TinyVGGModel.file_kind:
        model = TinyVGGModel(classes, config)
    else:
        kind = kind_of(config["frozen"], config.get("trainable_stages", 0))
        model = kind.from_config(classes, config, load_backbone)
    model.saved.load_state_dict(model_file["state_dict"])
    model.saved.eval()
    model.file = model_file
    return model


def load(path: str | Path, load_backbone: LoadBackbone = backbones.load) -> Model:
    """The model saved at `path`; one UserError line when the file is unsafe, corrupt or not a
    model file this pipeline wrote."""
    model_file = load_torch(path)
    try:
        return from_model_file(model_file, load_backbone)
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as err:  # RuntimeError: weights' shapes
        raise UserError(f"{path} is not a model file this pipeline wrote ({type(err).__name__})") from None
