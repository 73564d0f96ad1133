"""The tiny model files (harness/tiny_files.py) load through ComfyUI's own loader nodes, are detected
as the right family, sample finite latents and decode with their random TAESD; the cache is reused."""
import comfy_env

comfy_env.import_comfy()

import pathlib  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

import comfy.sample  # noqa: E402
import comfy.taesd.taesd  # noqa: E402
import folder_paths  # noqa: E402
import nodes as comfy_nodes  # noqa: E402  (ComfyUI's nodes.py: its root is first on sys.path)

import tiny_files  # noqa: E402
import tiny_models  # noqa: E402

FAMILIES = tuple(tiny_files.CHECKPOINTS)  # sd15, sdxl, sd3
LATENT_FORMATS = {"sd15": "SD15", "sdxl": "SDXL", "sd3": "SD3"}
LATENT_HW = (8, 8)  # 64x64 pixels: enough to run every block, cheap on CPU


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One intra-op thread for this module, restored after. On a 2-core machine shared with other
    jobs, two OpenMP threads thrash: SDXL's 2-step sample took 13-30 s instead of about 1 s."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def models_dir():
    return tiny_files.default_cache_dir()


@pytest.fixture(scope="module")
def files(models_dir):
    return tiny_files.ensure_files(models_dir)


@pytest.fixture(scope="module")
def comfy_folders(files, models_dir):
    """ComfyUI's model folders point at the cache for this module only (then restored)."""
    assert pathlib.Path(comfy_nodes.__file__).parent == comfy_env.comfyui_dir(), comfy_nodes.__file__

    def forget_listings():
        for folder in tiny_files.FOLDERS:
            folder_paths.filename_list_cache.pop(folder, None)

    with pytest.MonkeyPatch.context() as patch:
        for folder in tiny_files.FOLDERS:
            extensions = folder_paths.folder_names_and_paths[folder][1]
            patch.setitem(folder_paths.folder_names_and_paths, folder, ([str(models_dir / folder)], extensions))
        forget_listings()
        yield
    forget_listings()


_LOADED = {}


@pytest.fixture(scope="module")
def checkpoint(comfy_folders):
    """checkpoint(family) -> (MODEL, CLIP, VAE) from CheckpointLoaderSimple, loaded once."""

    def load(family):
        if family not in _LOADED:
            name = tiny_files.checkpoint_filename(family)
            assert name in comfy_nodes.CheckpointLoaderSimple.INPUT_TYPES()["required"]["ckpt_name"][0]
            _LOADED[family] = comfy_nodes.CheckpointLoaderSimple().load_checkpoint(name)
        return _LOADED[family]

    yield load
    _LOADED.clear()


def sample_latent(model, family, channels, steps=2, cfg=2.0, seed=0):
    latent = torch.zeros((1, channels) + LATENT_HW)
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(seed))
    positive = tiny_models.random_conditioning(family, seed=seed + 1)
    negative = tiny_models.random_conditioning(family, seed=seed + 2)
    return comfy.sample.sample(
        model, noise, steps, cfg, "euler", "normal", positive, negative, latent, seed=seed, disable_pbar=True
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_checkpoint_is_detected_as_its_family(checkpoint, family):
    model, clip, vae = checkpoint(family)
    spec = tiny_files.CHECKPOINTS[family]
    config = model.model.model_config
    assert type(config).__name__ == spec.supported_model
    assert type(config).__name__ == type(config.latent_format).__name__ == LATENT_FORMATS[family]
    for key, value in spec.unet_config.items():
        assert config.unet_config[key] == value, key
    assert clip is None  # no text encoder in the file
    assert isinstance(vae.first_stage_model, comfy.taesd.taesd.TAESD)
    assert vae.latent_channels == config.latent_format.latent_channels


@pytest.mark.parametrize("family", FAMILIES)
def test_checkpoint_samples_finite_and_its_vae_decodes(checkpoint, family):
    model, _, vae = checkpoint(family)
    channels = model.model.model_config.latent_format.latent_channels
    out = sample_latent(model, family, channels)
    assert out.shape == (1, channels) + LATENT_HW
    assert torch.isfinite(out).all()
    assert out.abs().max() > 0
    image = vae.decode(out)
    assert image.shape == (1, LATENT_HW[0] * 8, LATENT_HW[1] * 8, 3)
    assert torch.isfinite(image).all()


def test_sd3_diffusion_model_file_loads_with_unet_loader(checkpoint, comfy_folders):
    name = tiny_files.FILES["sd3_unet"].filename
    assert name in comfy_nodes.UNETLoader.INPUT_TYPES()["required"]["unet_name"][0]
    (model,) = comfy_nodes.UNETLoader().load_unet(name, "default")
    assert type(model.model.model_config).__name__ == "SD3"
    out = sample_latent(model, "sd3", 16)
    assert torch.isfinite(out).all()
    # Same spec, same weights as the SD3 checkpoint.
    from_checkpoint = checkpoint("sd3")[0].model.diffusion_model.state_dict()
    for key, value in model.model.diffusion_model.state_dict().items():
        assert torch.equal(value, from_checkpoint[key]), key


@pytest.mark.parametrize("vae_name,channels", [("taesd", 4), ("taesdxl", 4), ("taesd3", 16)])
def test_vae_loader_taesd_decodes_and_encodes(comfy_folders, vae_name, channels):
    assert vae_name in comfy_nodes.VAELoader.INPUT_TYPES()["required"]["vae_name"][0]
    (vae,) = comfy_nodes.VAELoader().load_vae(vae_name)
    assert isinstance(vae.first_stage_model, comfy.taesd.taesd.TAESD)
    latent = torch.randn((1, channels) + LATENT_HW, generator=torch.Generator().manual_seed(3))
    (image,) = comfy_nodes.VAEDecode().decode(vae, {"samples": latent})
    assert image.shape == (1, LATENT_HW[0] * 8, LATENT_HW[1] * 8, 3)
    assert torch.isfinite(image).all() and image.min() >= 0 and image.max() <= 1
    (encoded,) = comfy_nodes.VAEEncode().encode(vae, image)
    assert encoded["samples"].shape == latent.shape
    assert torch.isfinite(encoded["samples"]).all()


def test_second_call_rewrites_nothing(files, models_dir):
    def stamps(paths):
        return {name: (path.stat().st_ino, path.stat().st_mtime_ns) for name, path in paths.items()}

    before = stamps(files)
    again = tiny_files.ensure_files(models_dir)
    assert again == files
    assert stamps(again) == before


def test_stale_or_broken_files_are_rewritten_deterministically(tmp_path, monkeypatch):
    names = ["sd3_unet", "taesd3_decoder"]
    first = tiny_files.ensure_files(tmp_path / "a", names)
    second = tiny_files.ensure_files(tmp_path / "b", names)
    for name in names:
        assert first[name].read_bytes() == second[name].read_bytes(), name

    reference = {name: first[name].read_bytes() for name in names}
    first["sd3_unet"].write_bytes(b"truncated")
    monkeypatch.setattr(tiny_files, "GENERATOR_VERSION", tiny_files.GENERATOR_VERSION + 1000)
    stale = first["taesd3_decoder"].stat().st_ino  # rewrites replace the file (new inode)
    tiny_files.ensure_files(tmp_path / "a", names)
    assert first["sd3_unet"].read_bytes() != b"truncated"
    assert first["taesd3_decoder"].stat().st_ino != stale
    monkeypatch.undo()
    tiny_files.ensure_files(tmp_path / "a", names)
    for name in names:
        assert first[name].read_bytes() == reference[name], name
