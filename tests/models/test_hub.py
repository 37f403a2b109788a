"""Hugging Face repo ids as model references (`dsm.models.hub`), offline: each test builds
the hub cache itself, laid out as huggingface_hub lays it out
(`models--owner--name/{blobs,snapshots/<commit>,refs}`), holding a tiny random model in
Kyutai's layout (config.json naming `moshi_name`, `mimi_name`, `tokenizer_name`; a Mimi
safetensors in Kyutai's key layout). HF_HUB_OFFLINE=1 and no sockets in every test."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from helpers import keep_text_pieces

from dsm import cli
from dsm.commands import bench_serve as cmd_bench_serve
from dsm.commands import serve as cmd_serve
from dsm.models import LMConfig, build_lm, load_lm, preset, save_lm
from dsm.models.hub import (
    MIMI_NAME,
    MOSHI_NAME,
    TOKENIZER_NAME,
    ModelRefError,
    is_repo_ref,
    parse_repo_ref,
    resolve_model_ref,
)
from dsm.models.model_dir import ModelDirError, resolve_model
from dsm.recipes.config import RecipeError
from dsm.recipes.tasks.init_from import load_initial_lm_weights
from dsm.streaming.model_dir import load_model_dir
from dsm.streams.testing import train_tiny_tokenizer

REPO = "kyutai/stt-1b-en_fr"
COMMIT = hashlib.sha1(b"stt-1b-en_fr main").hexdigest()
OLD_COMMIT = hashlib.sha1(b"stt-1b-en_fr first").hexdigest()
KYUTAI_MIMI = "mimi-pytorch-e351c8d8@125.safetensors"  # names as in Kyutai's stt repos
KYUTAI_TOKENIZER = "tokenizer_en_fr_audio_8000.model"


def add_to_cache(cache: Path, repo_id: str, commit: str, files: dict[str, Path | bytes],
                 refs: tuple[str, ...] = ("main",)) -> Path:
    """Put `files` (name -> file or bytes) into `cache` as huggingface_hub does: content in
    blobs/<sha256>, snapshots/<commit>/<name> a relative symlink to it, refs/<ref> holding
    the commit. Returns the snapshot folder."""
    storage = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = storage / "snapshots" / commit
    (storage / "blobs").mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        data = content if isinstance(content, bytes) else None
        digest = hashlib.sha256(data if data is not None else content.read_bytes()).hexdigest()
        blob = storage / "blobs" / digest
        if not blob.exists():
            if data is not None:
                blob.write_bytes(data)
            else:
                try:
                    os.link(content, blob)  # the big Mimi file: no second copy
                except OSError:
                    shutil.copyfile(content, blob)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    for ref in refs:
        (storage / "refs").mkdir(exist_ok=True)
        (storage / "refs" / ref).write_text(commit)
    return snapshot


def use_hub_home(monkeypatch: pytest.MonkeyPatch, home: Path) -> Path:
    """Point huggingface_hub (and dsm) at `home`: HF_HOME, HF_HUB_CACHE=home/hub; returns
    the hub cache."""
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.delenv("DSM_CACHE", raising=False)
    return home / "hub"


@pytest.fixture(autouse=True)
def offline_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Every test: offline (HF_HUB_OFFLINE=1, in the environment and in huggingface_hub's
    import-time constant), an empty cache of its own, and no socket may connect."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a test tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return use_hub_home(monkeypatch, tmp_path / "hf-empty")


@pytest.fixture(scope="module")
def kyutai_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny random STT model in Kyutai's repo layout: name -> file (config.json too)."""
    loaders = pytest.importorskip("moshi.models.loaders")
    from dsm.codecs.testing import randomize_codebooks

    root = tmp_path_factory.mktemp("kyutai")
    tokenizer = train_tiny_tokenizer(root / "tok")
    torch.manual_seed(0)
    lm = build_lm(preset("stt-1b", dim=64, num_heads=4, num_layers=2, context=50,
                         text_card=tokenizer.vocab_size, n_q=4, delays=[0] * 5,
                         extra_heads_num_heads=1, extra_heads_dim=3)).eval()
    keep_text_pieces(lm, range(20, 26))
    weights, config = save_lm(lm, root / "lm")
    raw = json.loads(config.read_text())
    raw.update(mimi_name=KYUTAI_MIMI, tokenizer_name=KYUTAI_TOKENIZER)
    config.write_text(json.dumps(raw, indent=2))
    # Kyutai's Mimi, full size (the `mimi:` loader's configuration), random weights in
    # moshi's own key layout; half precision to halve the bytes written.
    mimi = loaders.get_mimi(None, num_codebooks=32)
    randomize_codebooks(mimi)
    mimi_file = root / KYUTAI_MIMI
    from safetensors.torch import save_file

    save_file({k: v.detach().half().contiguous() for k, v in mimi.state_dict().items()},
              str(mimi_file))
    return {"config.json": config, MOSHI_NAME: weights, KYUTAI_MIMI: mimi_file,
            KYUTAI_TOKENIZER: root / "tok" / "tiny.model"}


@pytest.fixture(scope="module")
def hub_home(tmp_path_factory: pytest.TempPathFactory, kyutai_files: dict[str, Path]) -> Path:
    """HF_HOME with REPO cached at two commits: main = COMMIT, and OLD_COMMIT, whose
    config.json has another text delay (the other files are the same blobs)."""
    home = tmp_path_factory.mktemp("hf")
    add_to_cache(home / "hub", REPO, COMMIT, dict(kyutai_files))
    old = json.loads(kyutai_files["config.json"].read_text())
    old["stt_config"] = {"audio_delay_seconds": 0.24}
    add_to_cache(home / "hub", REPO, OLD_COMMIT,
                 {**kyutai_files, "config.json": json.dumps(old).encode()}, refs=())
    return home


@pytest.fixture(scope="module")
def speech_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("audio") / "speech16k.wav"
    rng = np.random.default_rng(3)
    soundfile.write(path, (0.3 * rng.standard_normal(int(0.8 * 16000))).astype(np.float32), 16000)
    return path


def snapshot(home: Path, commit: str = COMMIT, repo_id: str = REPO) -> Path:
    return home / "hub" / ("models--" + repo_id.replace("/", "--")) / "snapshots" / commit


def test_the_fake_cache_is_what_huggingface_hub_reads(hub_home: Path) -> None:
    from huggingface_hub import scan_cache_dir, try_to_load_from_cache

    info = scan_cache_dir(hub_home / "hub")
    assert not info.warnings
    (repo,) = info.repos
    assert repo.repo_id == REPO and {r.commit_hash for r in repo.revisions} == {COMMIT, OLD_COMMIT}
    assert set(repo.refs) == {"main"}
    found = try_to_load_from_cache(REPO, KYUTAI_MIMI, cache_dir=hub_home / "hub")
    assert found == str(snapshot(hub_home) / KYUTAI_MIMI)
    assert (snapshot(hub_home) / KYUTAI_MIMI).is_symlink()


def test_transcribe_a_repo_id_as_its_snapshot(hub_home: Path, speech_file: Path, capsys,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    use_hub_home(monkeypatch, hub_home)
    assert resolve_model_ref(REPO).resolve() == snapshot(hub_home).resolve()
    assert cli.main(["transcribe", str(speech_file), "--model", REPO, "--json",
                     "--device", "cpu", "--no-cuda-graph"]) == 0
    by_repo = json.loads(capsys.readouterr().out)
    assert by_repo, "the random model said nothing: the comparison would prove little"
    assert cli.main(["transcribe", str(speech_file), "--model", str(snapshot(hub_home)),
                     "--json", "--device", "cpu", "--no-cuda-graph"]) == 0
    assert json.loads(capsys.readouterr().out) == by_repo
    # the snapshot named every file itself: it is the model directory, nothing was written
    assert not (hub_home / "dsm").exists()
    model = load_model_dir(resolve_model(REPO, "asr"))
    assert model.task == "asr" and model.text_delay == 6  # 0.5 s at 12.5 Hz
    assert model.codec.num_codebooks == 32 and model.codec.cardinality == 2048


def test_revisions_by_commit_and_branch(hub_home: Path, monkeypatch: pytest.MonkeyPatch,
                                        speech_file: Path, capsys) -> None:
    use_hub_home(monkeypatch, hub_home)
    assert resolve_model_ref(f"{REPO}@main").resolve() == snapshot(hub_home).resolve()
    old = resolve_model_ref(f"{REPO}@{OLD_COMMIT}")
    assert old.resolve() == snapshot(hub_home, OLD_COMMIT).resolve()
    assert load_model_dir(old).text_delay == 3  # that commit's config.json: 0.24 s
    with pytest.raises(ModelRefError) as error:
        resolve_model_ref(f"{REPO}@v9")
    message = str(error.value)
    assert "revision 'v9'" in message and REPO in message and "not in the cache" in message
    assert f"hf download {REPO} --revision v9" in message and "HF_HUB_OFFLINE" in message
    assert OLD_COMMIT in message and "main" in message  # what the cache does hold
    assert cli.main(["transcribe", str(speech_file), "--model", f"{REPO}@v9"]) == 2
    assert "revision 'v9'" in capsys.readouterr().err


def test_a_repo_not_in_the_cache_says_how_to_download_it(speech_file: Path, capsys) -> None:
    with pytest.raises(ModelRefError) as error:
        resolve_model_ref("kyutai/stt-2.6b-en")
    message = str(error.value)
    assert "kyutai/stt-2.6b-en is not in the cache" in message
    assert "hf download kyutai/stt-2.6b-en" in message and "unset HF_HUB_OFFLINE" in message
    with pytest.raises(ModelDirError, match="kyutai/stt-2.6b-en is not in the cache"):
        resolve_model("kyutai/stt-2.6b-en", "asr")
    assert cli.main(["transcribe", str(speech_file), "--model", "kyutai/stt-2.6b-en"]) == 2
    assert "hf download kyutai/stt-2.6b-en" in capsys.readouterr().err


def test_offline_is_read_when_called(monkeypatch: pytest.MonkeyPatch) -> None:
    """HF_HUB_OFFLINE set after huggingface_hub was imported still keeps it off the network
    (the socket guard would turn a request into another error)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(ModelRefError, match="HF_HUB_OFFLINE is set"):
        resolve_model_ref("kyutai/hibiki-1b-pytorch-bf16")


def test_a_file_named_by_config_json_that_is_missing(tmp_path: Path, offline_hub: Path,
                                                     kyutai_files: dict[str, Path]) -> None:
    raw = json.loads(kyutai_files["config.json"].read_text())
    raw["mimi_name"] = "mimi-missing.safetensors"
    add_to_cache(offline_hub, "kyutai/broken", COMMIT,
                 {"config.json": json.dumps(raw).encode(), MOSHI_NAME: b"weights",
                  KYUTAI_TOKENIZER: b"tokenizer"})
    with pytest.raises(ModelRefError) as error:
        resolve_model_ref("kyutai/broken")
    message = str(error.value)
    assert "file mimi-missing.safetensors (mimi_name in config.json)" in message
    assert "kyutai/broken" in message and "hf download kyutai/broken" in message


def test_lora_is_refused(offline_hub: Path, kyutai_files: dict[str, Path]) -> None:
    raw = json.loads(kyutai_files["config.json"].read_text())
    raw["lora_name"] = "lora.safetensors"
    add_to_cache(offline_hub, "kyutai/with-lora", COMMIT, {"config.json": json.dumps(raw).encode()})
    with pytest.raises(ModelRefError, match=r"lora_name: 'lora.safetensors'.*dsm has no LoRA"):
        resolve_model_ref("kyutai/with-lora")


def test_a_repo_without_config_json_gets_moshi_defaults(offline_hub: Path) -> None:
    repo, commit = "kyutai/moshiko-pytorch-bf16", hashlib.sha1(b"moshiko").hexdigest()
    fakes = {MOSHI_NAME: b"lm", MIMI_NAME: b"mimi", TOKENIZER_NAME: b"spm"}
    snap = add_to_cache(offline_hub, repo, commit, fakes)
    before = sorted(p.name for p in snap.iterdir())
    directory = resolve_model_ref(repo)
    # dsm's own directory beside the hub cache (HF_HOME/dsm), never inside the snapshot
    assert directory == offline_hub.parent / "dsm" / "kyutai--moshiko-pytorch-bf16" / commit
    assert sorted(p.name for p in snap.iterdir()) == before
    raw = json.loads((directory / "config.json").read_text())
    assert raw["model_type"] == "moshi"
    assert (raw["moshi_name"], raw["mimi_name"], raw["tokenizer_name"]) == (
        MOSHI_NAME, MIMI_NAME, TOKENIZER_NAME)
    config = LMConfig.from_dict(raw)  # dsm reads it as the Moshi 7B LM
    assert (config.dim, config.num_layers, config.num_heads, config.n_q, config.dep_q,
            config.text_card, config.context) == (4096, 32, 32, 16, 8, 32000, 3000)
    assert config.delays == [0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1]
    assert config.to_dict() == {**preset("moshi-7b").to_dict(), **{
        k: raw[k] for k in ("model_type", "moshi_name", "mimi_name", "tokenizer_name")}}
    for name, content in fakes.items():
        assert (directory / name).is_symlink() and (directory / name).read_bytes() == content
    assert resolve_model_ref(f"{repo}@{commit}") == directory  # the same, again


def test_a_partial_download_without_config_json_is_not_taken_for_moshi(
        offline_hub: Path) -> None:
    add_to_cache(offline_hub, "kyutai/partial", COMMIT, {MOSHI_NAME: b"lm"})
    with pytest.raises(ModelRefError, match=r"file config.json .* kyutai/partial is not in the "
                                            r"cache"):
        resolve_model_ref("kyutai/partial")


def test_file_names_the_config_leaves_out_are_filled_in(
        offline_hub: Path, kyutai_files: dict[str, Path]) -> None:
    raw = json.loads(kyutai_files["config.json"].read_text())
    del raw["tokenizer_name"]  # moshi's default applies: tokenizer_spm_32k_3.model
    snap = add_to_cache(offline_hub, "someone/stt", COMMIT,
                        {"config.json": json.dumps(raw).encode(), MOSHI_NAME: b"lm",
                         KYUTAI_MIMI: b"mimi", TOKENIZER_NAME: b"spm"})
    before = sorted(p.name for p in snap.iterdir())
    directory = resolve_model_ref("someone/stt")
    assert directory == offline_hub.parent / "dsm" / "someone--stt" / COMMIT
    assert sorted(p.name for p in snap.iterdir()) == before  # the snapshot is left alone
    written = json.loads((directory / "config.json").read_text())
    assert written == {**raw, "tokenizer_name": TOKENIZER_NAME}
    assert (directory / TOKENIZER_NAME).read_bytes() == b"spm"


def test_a_local_directory_wins_over_a_repo_id(hub_home: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               speech_file: Path, capsys) -> None:
    use_hub_home(monkeypatch, hub_home)
    monkeypatch.chdir(tmp_path)
    (tmp_path / REPO).mkdir(parents=True)
    assert resolve_model_ref(REPO) == Path(REPO)
    assert cli.main(["transcribe", str(speech_file), "--model", REPO]) == 2
    assert f"{REPO}: no config.json" in capsys.readouterr().err  # the local one was read


@pytest.mark.parametrize(("ref", "says"), [
    ("a/b/c", "neither a model directory that exists nor a Hugging Face repo id"),
    ("", "empty model reference"),
    ("   ", "empty model reference"),
    ("kyutai/stt-1b-en_fr@", "'@' must be followed by a revision"),
    ("kyutai/stt-1b-en_fr@ main", "the revision has spaces"),
    ("stt-1b-en_fr", "neither a model directory that exists nor a Hugging Face repo id"),
    ("kyutai/stt--1b", "neither a model directory that exists nor a Hugging Face repo id"),
    ("/no/such/model", "model directory not found: /no/such/model"),
    ("./models/asr", "model directory not found: ./models/asr"),
])
def test_malformed_references_are_refused(ref: str, says: str) -> None:
    with pytest.raises(ModelRefError, match=says):
        resolve_model_ref(ref)
    with pytest.raises(ModelDirError, match=says):
        resolve_model(ref, "asr")


def test_repo_id_spelling() -> None:
    assert parse_repo_ref(f"{REPO}@{COMMIT}").revision == COMMIT
    assert parse_repo_ref(REPO).revision is None and str(parse_repo_ref(f"{REPO}@main")) == (
        f"{REPO}@main")
    assert is_repo_ref("kyutai/moshiko-pytorch-bf16") and is_repo_ref("a.b/c_d-e@refs/pr/1")
    assert not is_repo_ref("a/b/c") and not is_repo_ref("name") and not is_repo_ref("a/b@")


def test_serve_loads_a_repo_id(hub_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use_hub_home(monkeypatch, hub_home)
    parser = argparse.ArgumentParser()
    cmd_serve.add_arguments(parser)
    args = parser.parse_args(["--asr", REPO, "--device", "cpu", "--no-cuda-graph",
                              "--max-streams", "1"])
    assert args.asr == REPO
    asr, tts = cmd_serve.build_services(args)
    assert tts is None and asr is not None and asr.kind == "asr"
    assert asr.engine.num_slots == 1
    asr.engine.close()
    missing = parser.parse_args(["--asr", "kyutai/stt-2.6b-en", "--device", "cpu"])
    with pytest.raises(ValueError, match="kyutai/stt-2.6b-en is not in the cache"):
        cmd_serve.build_services(missing)
    bench = argparse.ArgumentParser()
    cmd_bench_serve.add_arguments(bench)
    assert bench.parse_args(["--asr", f"{REPO}@main"]).asr == f"{REPO}@main"


def test_recipe_init_from_a_repo_id(hub_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use_hub_home(monkeypatch, hub_home)
    source = load_lm(snapshot(hub_home))
    torch.manual_seed(5)
    fresh = build_lm(source.config)
    assert not torch.equal(fresh.text_linear.weight, source.text_linear.weight)
    load_initial_lm_weights(fresh, REPO, "asr.toml", "model", "asr")
    for key, value in source.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    with pytest.raises(RecipeError, match=r"asr.toml: key 'task.init_from': .*kyutai/nope is "
                                          r"not in the cache"):
        load_initial_lm_weights(fresh, "kyutai/nope", "asr.toml", "model", "asr")


def _hub_failure(kind: type[Exception]) -> Exception:
    """An instance of one of huggingface_hub's HTTP errors, without an HTTP response."""
    error = kind.__new__(kind)
    Exception.__init__(error, f"{kind.__name__}: 404 (stand-in)")
    return error


def test_what_the_hub_answers_online_becomes_a_clear_error(
        monkeypatch: pytest.MonkeyPatch, kyutai_files: dict[str, Path]) -> None:
    """The online answers (the network is never used: the download function is replaced)."""
    from huggingface_hub.utils import (
        EntryNotFoundError,
        GatedRepoError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    def fail_with(kind: type[Exception]) -> object:
        def download(repo: object, filename: str) -> Path:
            if filename == "config.json" and kind is EntryNotFoundError:
                return kyutai_files["config.json"]  # the config is there, a file it names is not
            raise _hub_failure(kind)
        return download

    cases = [
        (RepositoryNotFoundError, "kyutai/stt-9b", "Hugging Face repo kyutai/stt-9b does not exist"),
        (GatedRepoError, "kyutai/stt-9b", "kyutai/stt-9b is gated: accept its terms"),
        (RevisionNotFoundError, "kyutai/stt-9b@v2", "kyutai/stt-9b has no revision 'v2'"),
        (EntryNotFoundError, "kyutai/stt-9b",
         f"kyutai/stt-9b has no file {MOSHI_NAME} \\(moshi_name in config.json\\)"),
    ]
    for kind, ref, says in cases:
        monkeypatch.setattr("dsm.models.hub._hf_download", fail_with(kind))
        with pytest.raises(ModelRefError, match=says):
            resolve_model_ref(ref)
