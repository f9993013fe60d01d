"""Metric weights on machines without internet access: the folders pyiqa and torch read them from,
``--weights_dir``, and one clear error when a file is missing (docs/method.md §10).

Where each file goes (the places pyiqa, torchvision and Hugging Face document; ``<torch hub
dir>`` is ``torch.hub.get_dir()``: ``$TORCH_HOME/hub``, default ``~/.cache/torch/hub``):

- ``pyiqa``: pyiqa's own weights, in pyiqa's cache ``<torch hub dir>/pyiqa``
  (``pyiqa.utils.download_util.DEFAULT_CACHE_DIR``, fixed when pyiqa is first imported);
- ``tv``: torchvision's ImageNet backbones, and the files pyiqa loads through
  ``torch.hub.load_state_dict_from_url``, in ``<torch hub dir>/checkpoints``;
- ``clip``: OpenAI CLIP models, in ``<torch hub dir>/clip``;
- ``hf``: Hugging Face models (timm backbones), in the Hugging Face cache
  (``huggingface_hub.constants.HF_HUB_CACHE``: ``$HF_HUB_CACHE``, default
  ``~/.cache/huggingface/hub``) as ``models--<org>--<name>/`` folders.

Before a metric is created (:func:`weight_guard`), each file it needs (:data:`KNOWN_WEIGHTS`)
is looked up in its folder and, when it is not there, by name anywhere under ``weights_dir``
(``--weights_dir``; a Hugging Face model by its ``models--<org>--<name>`` folder). A file found
there is linked into its folder (a symbolic link, or a copy where links cannot be made), where a
download would have put it, so pyiqa, torchvision and huggingface_hub read it with their own
code. A file in neither place is left to pyiqa to download, but only when its download host
answers an HTTP HEAD request within :data:`PROBE_TIMEOUT` seconds; otherwise
:class:`MissingWeightsError` is raised before pyiqa starts, naming the metric, the file, where to
get it, the folder it goes in and ``--weights_dir``. ``PSSR_OFFLINE=1`` (or ``HF_HUB_OFFLINE=1``)
skips every network probe. A download that fails or stalls (:data:`DOWNLOAD_STALL_TIMEOUT`)
while a metric is created is reported the same way. Metrics outside :data:`KNOWN_WEIGHTS` are
created by pyiqa as they are; a download they cannot make is reported as a
:class:`MissingWeightsError` with pyiqa's reason.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Optional
from urllib.parse import urlparse

import torch.hub
from huggingface_hub import constants, try_to_load_from_cache
from pyiqa.utils import download_util

# torch, pyiqa and huggingface_hub are imported on first use (below): importing this module for
# MissingWeightsError costs nothing, and pyiqa's import takes seconds.

PROBE_TIMEOUT = 3.0
DOWNLOAD_STALL_TIMEOUT = 60.0  # s without data before a started download is abandoned
_HOST_OK: dict[str, bool] = {}

PYIQA_URL = "https://huggingface.co/chaofengc/IQA-PyTorch-Weights/resolve/main/"
TORCHVISION_URL = "https://download.pytorch.org/models/"
HF_URL = "https://huggingface.co/"
CLIP_URLS = {  # OpenAI's files, as pyiqa's clip_model names them
    "RN50.pt": "https://openaipublic.azureedge.net/clip/models/afeb0e10f9e5a86da6080e35cf09123aca"
               "3b358a0c3e3b6c78a7b63bc04b6762/RN50.pt",
    "ViT-B-32.pt": "https://openaipublic.azureedge.net/clip/models/40d365715913c9da98579312b702a82c"
                   "18be219cc2a73407c4526f58eba950af/ViT-B-32.pt",
}
HF_TIMM_FILES = ("model.safetensors", "pytorch_model.bin")  # timm tries them in this order
FOLDER_NAMES = "pyiqa: <torch hub dir>/pyiqa, tv: <torch hub dir>/checkpoints, clip: " \
               "<torch hub dir>/clip, hf: Hugging Face cache"


@dataclass(frozen=True)
class WeightFile:
    """One file a metric needs: ``kind`` (the folder it goes in, see the module docstring),
    ``name`` (a file name; for ``hf`` the repo id) and ``url`` (where to get it)."""
    kind: str
    name: str
    url: str

    def __str__(self) -> str:
        return f"hf:{self.name} ({HF_TIMM_FILES[0]})" if self.kind == "hf" else \
            f"{self.kind}:{self.name}"

    @property
    def what(self) -> str:
        """The file as an error names it."""
        return f"{HF_TIMM_FILES[0]} of the Hugging Face repo {self.name}" if self.kind == "hf" \
            else self.name


def _pyiqa(name: str) -> WeightFile:
    return WeightFile("pyiqa", name, PYIQA_URL + name)


def _tv(name: str) -> WeightFile:
    return WeightFile("tv", name, TORCHVISION_URL + name)


def _hub(name: str) -> WeightFile:
    """A file of pyiqa's that pyiqa loads through torch.hub (so it goes in checkpoints/)."""
    return WeightFile("tv", name, PYIQA_URL + name)


def _clip(name: str) -> WeightFile:
    return WeightFile("clip", name, CLIP_URLS[name])


def _hf(repo: str) -> WeightFile:
    return WeightFile("hf", repo, HF_URL + repo)


# Files the common metrics need (pyiqa 0.1.15.post2; tests/test_metrics.py checks the names
# against pyiqa's and torchvision's sources). Metrics absent from this table either need no
# file (psnr, ssim, ms_ssim, cw_ssim, fsim, vif, gmsd, vsi, mad, nlpd, piqe, entropy) or are
# created by pyiqa as they are.
_RESNET50_HF = _hf("timm/resnet50.a1_in1k")
KNOWN_WEIGHTS: dict[str, tuple[WeightFile, ...]] = {
    "lpips": (_tv("alexnet-owt-7be5be79.pth"), _pyiqa("LPIPS_v0.1_alex-df73285e.pth")),
    "lpips+": (_tv("alexnet-owt-7be5be79.pth"), _pyiqa("LPIPS_v0.1_alex-df73285e.pth")),
    "lpips-vgg": (_tv("vgg16-397923af.pth"), _pyiqa("LPIPS_v0.1_vgg-a78928a0.pth")),
    "lpips-vgg+": (_tv("vgg16-397923af.pth"), _pyiqa("LPIPS_v0.1_vgg-a78928a0.pth")),
    "stlpips": (_pyiqa("alex_shift_tolerant.pth"),),
    "dists": (_tv("vgg16-397923af.pth"), _pyiqa("DISTS_weights-f5e65c96.pth")),
    "niqe": (_pyiqa("niqe_modelparameters.mat"),),
    "niqe_matlab": (_pyiqa("niqe_matlab_params.mat"),),
    "ilniqe": (_pyiqa("ILNIQE_templateModel.mat"),),
    "brisque": (_pyiqa("brisque_svm_weights.pth"),),
    "brisque_matlab": (_pyiqa("brisque_matlab.mat"),),
    "nrqm": (_pyiqa("NRQM_model.mat"),),
    "pi": (_pyiqa("NRQM_model.mat"), _pyiqa("niqe_modelparameters.mat")),
    "musiq": (_pyiqa("musiq_koniq_ckpt-e95806b9.pth"),),
    "clipiqa": (_clip("RN50.pt"),),
    "clipiqa+": (_clip("RN50.pt"), _pyiqa("CLIP-IQA+_learned_prompts-603f3273.pth")),
    "maniqa": (_hf("timm/vit_base_patch8_224.augreg2_in21k_ft_in1k"),
               _pyiqa("ckpt_koniq10k.pt")),
    "topiq_nr": (_RESNET50_HF, _pyiqa("cfanet_nr_koniq_res50-9a73138b.pth")),
    "topiq_fr": (_RESNET50_HF, _pyiqa("cfanet_fr_kadid_res50-2c4cc61d.pth")),
    "hyperiqa": (_RESNET50_HF, _pyiqa("HyperIQA-resnet50-koniq10k-c96c41b1.pth")),
    "liqe": (_clip("ViT-B-32.pt"), _pyiqa("liqe_koniq.pt")),
    "qualiclip": (_clip("RN50.pt"), _pyiqa("QualiCLIP.pth")),
    "arniqa": (_tv("resnet50-0676ba61.pth"), _hub("ARNIQA.pth"), _hub("regressor_koniq10k.pth")),
}


class MissingWeightsError(RuntimeError):
    """A requested metric needs a weight file that is neither present nor downloadable."""

    def __init__(self, metric: str, file: str, folder: str, weights_dir: Optional[str],
                 url: Optional[str] = None, reason: str = ""):
        self.metric, self.file, self.folder, self.weights_dir = metric, file, folder, weights_dir
        where = f"it is not in {folder}"
        where += f" nor under --weights_dir {weights_dir}" if weights_dir else ""
        src = f" (from {url})" if url else ""
        why = f" and cannot be downloaded ({reason})" if reason else ""
        super().__init__(
            f"metric '{metric}' needs the weight file '{file}'{src}; {where}{why}. "
            f"Fetch it on a machine with internet access and put it in {folder}, or pass "
            f"--weights_dir DIR with the file anywhere inside DIR."
            + (f" All files '{metric}' needs: {', '.join(map(str, KNOWN_WEIGHTS[metric]))} "
               f"({FOLDER_NAMES})." if metric in KNOWN_WEIGHTS else ""))


# ----------------------------------------------------------------------------- the network

def offline_forced() -> bool:
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
               for k in ("PSSR_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _head_answers(url: str, timeout: float) -> bool:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return True
    except urllib.error.HTTPError:  # an HTTP answer, even 4xx/5xx: the host is there
        return True
    except Exception:  # noqa: BLE001 - no answer of any kind
        return False


def host_reachable(url: str, timeout: float = PROBE_TIMEOUT) -> bool:
    """True when an HTTP HEAD request to ``url`` gets any HTTP answer (redirects followed, 4xx/5xx
    count as an answer) within about ``timeout`` s. DNS, TCP, TLS and HTTP are all exercised, so
    transparent proxies that accept every TCP connection do not fool it. Cached per host."""
    if offline_forced():
        return False
    parts = urlparse(url)
    key = f"{parts.scheme}://{parts.netloc}"
    if key not in _HOST_OK:
        # in a daemon thread, so that a hanging DNS lookup or handshake is bounded as well
        answer: list[bool] = []
        probe = threading.Thread(target=lambda: answer.append(_head_answers(url, timeout)),
                                 daemon=True)
        probe.start()
        probe.join(timeout + 0.5)
        _HOST_OK[key] = bool(answer and answer[0])
    return _HOST_OK[key]


# ----------------------------------------------------------------------------- the folders

def torch_hub_dir() -> str:
    return torch.hub.get_dir()


def pyiqa_cache_dir() -> str:
    """pyiqa's cache folder (``<torch hub dir>/pyiqa`` when pyiqa was imported)."""
    return download_util.DEFAULT_CACHE_DIR


def hf_cache_dir() -> str:
    return constants.HF_HUB_CACHE


def folder_of(f: WeightFile) -> str:
    """The folder pyiqa / torch / huggingface_hub read ``f`` from."""
    if f.kind == "pyiqa":
        return pyiqa_cache_dir()
    if f.kind == "hf":
        return hf_cache_dir()
    return os.path.join(torch_hub_dir(), "checkpoints" if f.kind == "tv" else "clip")


def _hf_folder_name(repo: str) -> str:
    return "models--" + repo.replace("/", "--")


def _hf_cached(repo: str, cache_dir: str) -> bool:
    return any(isinstance(try_to_load_from_cache(repo, name, cache_dir=cache_dir), str)
               for name in HF_TIMM_FILES)


def is_present(f: WeightFile) -> bool:
    if f.kind == "hf":
        return _hf_cached(f.name, hf_cache_dir())
    return os.path.isfile(os.path.join(folder_of(f), f.name))


def find_in_dir(weights_dir: Optional[str], file_name: str) -> Optional[str]:
    """Path of ``file_name`` directly in ``weights_dir`` or anywhere below it."""
    if not weights_dir or not file_name:
        return None
    root = Path(weights_dir)
    if not root.is_dir():
        return None
    direct = root / file_name
    if direct.is_file():
        return str(direct.resolve())
    for p in sorted(root.rglob(file_name)):
        if p.is_file():
            return str(p.resolve())
    return None


def _find_hf_model(weights_dir: Optional[str], repo: str) -> Optional[str]:
    """A ``models--<org>--<name>`` folder under ``weights_dir`` that holds the model file."""
    if not weights_dir or not Path(weights_dir).is_dir():
        return None
    name = _hf_folder_name(repo)
    for p in sorted(Path(weights_dir).rglob(name)):
        if p.is_dir() and _hf_cached(repo, str(p.parent)):
            return str(p.resolve())
    return None


def find_weights(f: WeightFile, weights_dir: Optional[str]) -> Optional[str]:
    """Where ``f`` is under ``weights_dir`` (None when it is not)."""
    if f.kind == "hf":
        return _find_hf_model(weights_dir, f.name)
    return find_in_dir(weights_dir, f.name)


def _link(found: str, target: Path) -> None:
    """Put ``found`` at ``target``: a symbolic link, or a copy where links cannot be made;
    written under a temporary name and renamed, replacing a dangling link."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.link")
    try:
        os.symlink(found, tmp, target_is_directory=os.path.isdir(found))
    except OSError:
        (shutil.copytree if os.path.isdir(found) else shutil.copyfile)(found, tmp)
    os.replace(tmp, target)


def link_from_weights_dir(metric: str, f: WeightFile, found: str,
                          weights_dir: Optional[str]) -> None:
    """Make ``found`` (under ``weights_dir``) the file ``f`` in its folder."""
    folder = folder_of(f)
    target = Path(folder) / (_hf_folder_name(f.name) if f.kind == "hf" else f.name)
    try:
        _link(found, target)
    except OSError as e:
        raise MissingWeightsError(metric, f.what, folder, weights_dir, f.url,
                                  f"found at {found} but it cannot be put there: {e}") from e


def prepare_weights(metric: str, weights_dir: Optional[str] = None) -> list[WeightFile]:
    """Link every file ``metric`` needs that is missing from its folder and found under
    ``weights_dir``; returns the files still missing."""
    missing = []
    for f in KNOWN_WEIGHTS.get(metric, ()):
        if is_present(f):
            continue
        found = find_weights(f, weights_dir)
        if found:
            link_from_weights_dir(metric, f, found, weights_dir)
        else:
            missing.append(f)
    return missing


def require_weights(metric: str, weights_dir: Optional[str] = None) -> None:
    """:func:`prepare_weights`, then :class:`MissingWeightsError` for the first missing file
    whose download host does not answer (or with ``PSSR_OFFLINE=1``)."""
    for f in prepare_weights(metric, weights_dir):
        if not host_reachable(f.url):
            raise MissingWeightsError(metric, f.what, folder_of(f), weights_dir, f.url,
                                      "download host unreachable or offline mode set")


# ----------------------------------------------------------------------------- creation

_NETWORK_ERRORS = ("URLError", "gaierror", "ConnectTimeout", "ConnectionError", "MaxRetryError",
                   "LocalEntryNotFoundError", "OfflineModeIsEnabled", "EntryNotFoundError",
                   "RepositoryNotFoundError")


def _is_download_failure(e: BaseException) -> bool:
    """``e`` (or an exception it came from) is a failed or refused download."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        text = str(e).lower()
        if (isinstance(e, (ConnectionError, TimeoutError, socket.timeout))
                or type(e).__name__ in _NETWORK_ERRORS or "offline" in text
                or "huggingface.co" in text or "cannot find the requested files" in text):
            return True
        e = e.__cause__ or e.__context__
    return False


def _download_failed(metric: str, weights_dir: Optional[str], e: Exception) -> MissingWeightsError:
    """The error for a download that failed while ``metric`` was created: the first of its
    files still missing, or pyiqa's reason when the metric's files are not known here."""
    reason = f"{type(e).__name__}: {e}".strip().splitlines()[0][:300]
    missing = [f for f in KNOWN_WEIGHTS.get(metric, ()) if not is_present(f)]
    if missing:
        f = missing[0]
        return MissingWeightsError(metric, f.what, folder_of(f), weights_dir, f.url, reason)
    folders = (f"{pyiqa_cache_dir()}, {os.path.join(torch_hub_dir(), 'checkpoints')}, "
               f"{os.path.join(torch_hub_dir(), 'clip')} or {hf_cache_dir()}")
    return MissingWeightsError(metric, "(a file pyiqa downloads)", folders, weights_dir,
                               reason=reason)


@contextlib.contextmanager
def _download_timeout(seconds: float):
    """Sockets opened meanwhile give up after ``seconds`` without data (urllib downloads have
    no timeout of their own); a timeout set by the caller is kept."""
    prev = socket.getdefaulttimeout()
    if prev is None:
        socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(prev)


@contextlib.contextmanager
def weight_guard(metric: str, weights_dir: Optional[str] = None, require: bool = False):
    """Create a pyiqa metric inside this context: the files found under ``weights_dir`` are
    linked into their folders first (:func:`prepare_weights`; with ``require``, a file that
    cannot be downloaded raises :class:`MissingWeightsError` before anything starts,
    :func:`require_weights`), and a download that fails or stalls while the metric is created
    becomes a :class:`MissingWeightsError` naming the file."""
    if require:
        require_weights(metric, weights_dir)
    else:
        prepare_weights(metric, weights_dir)
    try:
        with _download_timeout(DOWNLOAD_STALL_TIMEOUT):
            yield
    except MissingWeightsError:
        raise
    except Exception as e:
        if _is_download_failure(e):
            raise _download_failed(metric, weights_dir, e) from e
        raise


# ----------------------------------------------------------------------------- our own models

class LocalWeightsMissing(ValueError):
    """A weight file of a metric implemented here (DOVER, FasterVQA, RAFT) is not found."""


def local_folders(weights_dir: Optional[str]) -> list[Path]:
    """Where the files of our own metric models are looked for: ``--weights_dir`` (at any
    depth), then ``<torch hub dir>/checkpoints``."""
    folders = [Path(weights_dir)] if weights_dir else []
    return folders + [Path(torch_hub_dir()) / "checkpoints"]


def find_local_file(names: tuple, weights_dir: Optional[str], metric: str, url: str) -> Path:
    """The first of ``names`` found in :func:`local_folders`; otherwise
    :class:`LocalWeightsMissing` with one line naming the file, the folders and where to get
    it. Nothing is downloaded."""
    folders = local_folders(weights_dir)
    for folder in folders:
        for name in names:
            found = find_in_dir(str(folder), name)
            if found:
                return Path(found)
    raise LocalWeightsMissing(
        f"metric '{metric}' needs the weight file '{names[0]}' (from {url}); it is not in "
        f"{' nor '.join(str(f) for f in folders)}. Download it there, or pass --weights_dir DIR "
        f"with the file anywhere inside DIR.")
