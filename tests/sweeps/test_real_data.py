"""Real models and data on disk in the sweep app: an image folder and a torchvision dataset, timm and
torchvision models by name, the user's weights, and every bad input refused before any training."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from PIL import Image
from sklearn.datasets import load_digits
from torch.utils.data import TensorDataset

from analysis import choose, load_choice, load_experiment, run_config, validation_accuracy
from sweeps.builders.datasets import folder_identity, image_folder
from sweeps.builders.models import timm_model, torchvision_model
from sweeps.job.data import job_data, load_data
from sweeps.layout import ROLE
from tests.support.app import run_analysis, run_app

PER_CLASS, VAL_PER_CLASS = 30, 6


def digit_images(size: int) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits, 30 per class, upscaled to ``size`` x ``size`` 8-bit images."""
    digits = load_digits()
    picked = np.concatenate([np.flatnonzero(digits.target == c)[:PER_CLASS] for c in range(10)])
    small = (digits.images[picked] * (255 / 16)).astype(np.uint8)
    return np.stack(
        [np.asarray(Image.fromarray(a).resize((size, size), Image.BILINEAR)) for a in small]
    ), digits.target[picked]


def make_image_folder(root: Path) -> Path:
    """``root/train/<digit>/*.png`` (24 per class) and ``root/val/<digit>/*.png`` (6 per class), RGB 32x32."""
    images, labels = digit_images(32)
    seen: dict[int, int] = {}
    for image, label in zip(images, labels):
        k = seen[label] = seen.get(label, 0) + 1
        folder = root / ("val" if k > PER_CLASS - VAL_PER_CLASS else "train") / f"digit_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).convert("RGB").save(folder / f"{k:03d}.png")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("images"))


def idx(path: Path, array: np.ndarray) -> None:
    """An MNIST idx file (unsigned bytes, big-endian sizes), as torchvision's MNIST reads it."""
    header = struct.pack(">I", 0x800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def make_mnist_root(root: Path) -> Path:
    """The digits as torchvision's ``MNIST`` raw files (what its download would leave), 28x28."""
    images, labels = digit_images(28)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    val = np.arange(len(images)) % PER_CLASS >= PER_CLASS - VAL_PER_CLASS
    for prefix, keep in (("train", ~val), ("t10k", val)):
        idx(raw / f"{prefix}-images-idx3-ubyte", images[keep])
        idx(raw / f"{prefix}-labels-idx1-ubyte", labels[keep])
    return root


# a 2-trial study of an image model; the ONNX export is checked (the default), latency is not measured
# (seconds per trial, asserted by test_onnx_export)
TINY = [
    "export.latency=false",
    "base.training.max_epochs=1",
    "base.training.mini_batch_size=32",
    "training.mini_batch_size=32",
    "training.max_epochs=1",
    "training.validation_frequency=4",
    "pruning.goal=0.2",
    "pruning.increment=0.1",
    "hydra.sweeper.params=null",
    "pruning.num_importance_score_iterations=int(interval(1, 3))",
    "hydra.sweeper.n_trials=2",
    "tracking.log_model=false",
]


@pytest.mark.slow
def test_an_image_folder_and_a_timm_vision_transformer_end_to_end(folder, tmp_path):
    # a ViT on the 32x32 images through its own arguments; the CNN case is the torchvision test below
    run_app(
        tmp_path,
        "data=image_folder",
        f"data.root={folder}",
        "model=timm",
        "model.name=vit_tiny_patch16_224",
        "+model.model_kwargs.img_size=32",
        "+model.model_kwargs.patch_size=8",
        "model.num_classes=10",
        *TINY,
        multirun=True,
        timeout=1800,
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment = load_experiment("taylorprune", uri)
    assert sorted(experiment.table["trial"].unique().tolist()) == [0, 1] and not experiment.unfinished
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("taylorprune").experiment_id])
    trial_runs = [r for r in runs if r.data.tags[ROLE] == "trial"]
    assert [r.data.tags["taylorprune.onnx"] for r in trial_runs] == ["exported"] * 2, "checked against onnxruntime"
    result = run_analysis(
        tmp_path,
        "--experiment",
        "taylorprune",
        "--tracking-uri",
        uri,
        "--out",
        str(tmp_path / "analysis_out"),
        "--max-drop",
        "100",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    chosen = choose(experiment.table, max_drop=100)
    model = load_choice(chosen, uri)  # rebuilt through the allow-listed sweeps.builders.models.timm_model
    assert type(model).__name__ == "VisionTransformer" and model.patch_embed.img_size == (32, 32)
    assert sum(p.numel() for p in model.parameters()) == chosen["learnables"] and chosen["reduction"] >= 0.2
    config = run_config(chosen["run_id"], uri)
    assert config.data.root == str(folder)
    accuracy = validation_accuracy(model, config)  # the image folder, rebuilt through sweeps.builders.datasets
    assert abs(accuracy - chosen["validation_accuracy"]) < 1e-3


@pytest.mark.slow
def test_a_torchvision_dataset_and_model_with_the_users_weights(tmp_path):
    root = make_mnist_root(tmp_path / "mnist")
    torch.manual_seed(0)
    torch.save(torchvision_model("resnet18", num_classes=10).state_dict(), tmp_path / "trained.pt")
    result = run_app(
        tmp_path,
        "data=torchvision",
        "data.name=MNIST",
        f"data.root={root}",
        "data.channels=3",
        "data.augment=false",
        "model=torchvision",
        "model.name=resnet18",
        "model.num_classes=10",
        f"model.weights_path={tmp_path / 'trained.pt'}",
        *TINY,
        "export.onnx=false",  # exported in the image-folder test
        multirun=True,
        timeout=1800,
    )
    assert f"Base network: model weights {tmp_path / 'trained.pt'}" in result.stderr + result.stdout
    assert not (tmp_path / ".cache").exists(), "the user's weights are the base network: nothing trained"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment = load_experiment("taylorprune", uri)
    assert experiment.table["trial"].nunique() == 2 and not experiment.unfinished


def test_the_image_folder_group_reads_lazily_with_the_configured_transforms(folder):
    data = image_folder(str(folder), crop=28, mean=[0.5] * 3, std=[0.5] * 3, augment=True)
    assert data["classes"] == [f"digit_{k}" for k in range(10)]
    assert len(data["train"]) == 240 and len(data["validation"]) == 60
    x, y = data["validation"][0]
    assert tuple(x.shape) == (3, 28, 28) and y == 0 and -1.0 <= float(x.min()) < float(x.max()) <= 1.0


@pytest.mark.slow
@pytest.mark.parametrize(
    "breakage,message",
    [
        ("missing root", "data.root='{root}/nowhere' does not exist or is not a folder"),
        ("empty class", "class folder '{root}/train/digit_3' holds no images"),
        (
            "different classes",
            "the class folders of 'train' and 'val' differ: only in 'train' ['digit_9'], only in 'val' []",
        ),
    ],
)
def test_a_broken_image_folder_is_refused_before_any_training(tmp_path, breakage, message):
    root = make_image_folder(tmp_path / "images")
    given = root
    if breakage == "missing root":
        given = root / "nowhere"
    elif breakage == "empty class":
        for image in (root / "train" / "digit_3").iterdir():
            image.unlink()
    else:
        for image in (root / "val" / "digit_9").iterdir():
            image.unlink()
        (root / "val" / "digit_9").rmdir()
    result = run_app(
        tmp_path, "data=image_folder", f"data.root={given}", "model=timm", "model.num_classes=10", check=False
    )
    assert result.returncode != 0 and message.format(root=root) in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / ".cache").exists(), "nothing was trained"


@pytest.mark.slow
def test_a_num_classes_that_disagrees_with_the_data_is_refused(folder, tmp_path):
    result = run_app(
        tmp_path, "data=image_folder", f"data.root={folder}", "model=timm", "model.num_classes=5", check=False
    )
    assert result.returncode != 0
    assert "model.num_classes=5, but the data has 10 classes (digit_0, digit_1" in result.stderr
    assert "set model.num_classes=10" in result.stderr and not (tmp_path / ".cache").exists()


def test_models_by_name_with_the_users_weights(tmp_path):
    torch.manual_seed(0)
    trained = timm_model("resnet18", num_classes=10)
    torch.save(trained.state_dict(), tmp_path / "weights.pt")
    loaded = timm_model("resnet18", num_classes=10, checkpoint=str(tmp_path / "weights.pt"))
    assert all(torch.equal(a, b) for a, b in zip(trained.state_dict().values(), loaded.state_dict().values()))
    with pytest.raises(ValueError, match="model.name='resnet_18' is not a timm model"):
        timm_model("resnet_18", num_classes=10)
    with pytest.raises(ValueError, match="model.weights_path='/no/such.pt' does not exist"):
        torchvision_model("resnet18", num_classes=10, weights_path="/no/such.pt")


def test_a_timm_model_takes_its_own_arguments_but_not_create_models():
    vit = timm_model("vit_tiny_patch16_224", num_classes=10, model_kwargs={"img_size": 32, "patch_size": 8})
    assert vit(torch.zeros(1, 3, 32, 32)).shape == (1, 10) and vit.patch_embed.num_patches == 16
    for refused in ({"pretrained": True}, {"checkpoint_path": "/tmp/w.pt"}, {"num_classes": 3}):
        with pytest.raises(ValueError, match=f"model.model_kwargs=.* sets \\['{next(iter(refused))}'\\]"):
            timm_model("vit_tiny_patch16_224", num_classes=10, model_kwargs=refused)


def test_the_folder_identity_follows_the_file_list(tmp_path):
    copy = make_image_folder(tmp_path / "copy")
    before = folder_identity(str(copy))
    assert folder_identity(str(copy)) == before
    (copy / "train" / "digit_0" / "extra.png").write_bytes((copy / "train" / "digit_0" / "001.png").read_bytes())
    assert folder_identity(str(copy)) != before


@pytest.mark.slow
def test_custom_data_as_datasets_and_loaders(tmp_path):
    run_app(
        tmp_path,
        "data=custom",
        "data._target_=tests.support.app.waves_datasets",
        "model=deeper_cnn1d",
        "model.classes=4",
        "base.training.max_epochs=2",
        "pruning.goal=0.2",
        "pruning.increment=0.1",
        "training.max_epochs=1",
        "training.num_workers=1",
        "training.validation_frequency=2",
        "export.latency=false",
    )
    experiment = load_experiment("taylorprune", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert experiment.table["reduction"].max() >= 0.2 and experiment.table["validation_accuracy"].notna().all()


def test_labels_the_model_has_no_output_for_are_refused_before_training():
    from hydra import compose, initialize_config_dir

    from sweeps.job.schemas import register_schemas

    register_schemas()
    with initialize_config_dir(config_dir=str(Path(__file__).parents[2] / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["data=digits", "model=small_cnn2d", "model.classes=7"])
    with pytest.raises(
        ValueError,
        match="^model.classes=7, but y_train holds label 9 \\(the labels must be 0 to 6\\); "
        "set model.classes=10, or relabel the data$",
    ):
        load_data(cfg)


def test_the_forms_a_data_builder_may_return():
    x, y = torch.zeros(4, 1, 8), torch.zeros(4, dtype=torch.long)
    assert job_data({"x_train": x, "y_train": y}, "t").validation is None
    assert job_data(TensorDataset(x, y), "t").train is not None
    with pytest.raises(ValueError, match="t returned unknown keys \\['test'\\]; use train, validation and classes"):
        job_data({"train": TensorDataset(x, y), "test": None}, "t")
    with pytest.raises(ValueError, match="t must return a dict .* or a Dataset or DataLoader; got list"):
        job_data([x, y], "t")
