"""models.device and models.registry: device resolution and encoder spec parsing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import models.bundle
from models import registry
from models.device import resolve_device
from models.registry import load_encoder


def test_resolve_device() -> None:
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("CPU") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present")
def test_cuda_requested_without_cuda() -> None:
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda:0")


class _Recorder:
    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        self.args = args
        self.kwargs = kwargs


@pytest.fixture()
def fake_backends(monkeypatch: pytest.MonkeyPatch) -> None:
    import models.encoders.offline as offline
    import models.encoders.openclip as openclip

    monkeypatch.setattr(offline, "OfflineEncoder", _Recorder)
    monkeypatch.setattr(openclip, "OpenClipEncoder", _Recorder)


@pytest.mark.usefixtures("fake_backends")
@pytest.mark.parametrize(
    ("spec", "args"),
    [
        ("openclip:ViT-B-32", ("ViT-B-32", None)),
        ("openclip:ViT-B-32:laion2b_s34b_b79k", ("ViT-B-32", "laion2b_s34b_b79k")),
        ("openclip:ViT-B-32:hf-hub:org/name", ("ViT-B-32", "hf-hub:org/name")),
        ("openclip:ViT-B-32:/models/a:b.pt", ("ViT-B-32", "/models/a:b.pt")),
        ("openclip:hf-hub:timm/ViT-B-16-SigLIP", ("hf-hub:timm/ViT-B-16-SigLIP", None)),
        ("openclip:local-dir:/srv/model", ("local-dir:/srv/model", None)),
        ("  openclip:RN50:openai ", ("RN50", "openai")),
    ],
)
def test_openclip_specs(spec: str, args: tuple[str, str | None]) -> None:
    encoder = load_encoder(spec, device="cpu")
    assert isinstance(encoder, _Recorder)
    assert encoder.args == args
    assert encoder.kwargs == {"device": "cpu"}


@pytest.mark.usefixtures("fake_backends")
def test_offline_spec(tmp_path: Path) -> None:
    encoder = load_encoder("offline", device="cpu", cache_dir=tmp_path)
    assert isinstance(encoder, _Recorder)
    assert encoder.kwargs == {"device": "cpu", "cache_dir": tmp_path}


@pytest.mark.parametrize(
    "spec",
    ["", "nope", "offline:x", "openclip", "openclip:", "openclip::tag", "bundle:", "clip:ViT-B-32"],
)
def test_unknown_specs_list_valid_forms(spec: str) -> None:
    with pytest.raises(ValueError, match="valid forms") as info:
        load_encoder(spec)
    for form in ("offline", "openclip:ARCH", "bundle:PATH"):
        assert form in str(info.value)


def test_a_bundle_spec_loads_the_bundle_at_its_path(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    fake = lambda path, device: calls.append((path, device)) or "ENCODER"  # noqa: E731
    monkeypatch.setattr(models.bundle, "load_bundle", fake)
    assert load_encoder("bundle:/srv/b:1", device="cpu") == "ENCODER"
    assert calls == [(Path("/srv/b:1"), "cpu")]


def test_real_tiny_openclip_through_registry(tmp_path: Path) -> None:
    torch.manual_seed(0)
    encoder = load_encoder("openclip:mmsearch-tiny-vit", device="cpu")
    checkpoint = tmp_path / "w.pt"
    torch.save(encoder.model.state_dict(), checkpoint)  # type: ignore[attr-defined]
    again = load_encoder(f"openclip:mmsearch-tiny-vit:{checkpoint}", device="cpu")
    assert again.fingerprint == encoder.fingerprint
    assert registry.SPEC_FORMS
