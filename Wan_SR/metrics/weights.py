"""Offline-safe creation of pyiqa metrics: find weight files locally, fail fast and clearly.

pyiqa fetches weights through four routes; :func:`weight_guard` wraps each of them while a
metric is being created:

1. pyiqa's own files (``load_file_from_url``) -> ``<torch hub dir>/pyiqa/<file>``
   (``pyiqa.utils.download_util.DEFAULT_CACHE_DIR``; the torch hub dir is
   ``$TORCH_HOME/hub``, default ``~/.cache/torch/hub``).
2. torchvision ImageNet backbones (``torch.hub.load_state_dict_from_url``; LPIPS, DISTS, ...)
   -> ``<torch hub dir>/checkpoints/<file>``.
3. CLIP backbones (``pyiqa.archs.clip_model._download`` -> ``<torch hub dir>/clip/<file>``,
   and openai ``clip.load`` -> ``~/.cache/clip/<file>``).
4. Hugging Face hub (timm backbones, transformers models) -> the HF cache
   (``huggingface_hub.constants.HF_HUB_CACHE``, default ``~/.cache/huggingface/hub``); when
   ``weights_dir`` holds an HF cache (``models--*`` folders, directly or under ``hub/`` or
   ``huggingface/hub/``) that cache is used instead.

For routes 1-3 the expected file is looked up, in order, at pyiqa's target path and anywhere
under ``weights_dir`` (``--weights_dir``, searched recursively by file name). Only when it is in
neither place is a download attempted, and only after the download URL answered an HTTP HEAD
request within ``PROBE_TIMEOUT`` seconds (DNS, TLS included); otherwise
:class:`MissingWeightsError` is raised at once, naming the metric, the file, the folder pyiqa
looks in and ``--weights_dir``. For route 4 the HF hub is switched to offline mode when
huggingface.co does not answer, so a missing file fails at once too. Setting the environment
variable ``PSSR_OFFLINE=1`` (or ``HF_HUB_OFFLINE=1``) skips every network attempt.
"""
from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import urlparse

PROBE_TIMEOUT = 3.0
DOWNLOAD_STALL_TIMEOUT = 60.0  # s without data before a started download is abandoned
_HOST_OK: dict[str, bool] = {}


# Files the common metrics need (pyiqa 0.1.15.post2), where each goes:
#   pyiqa: <torch hub dir>/pyiqa, tv: <torch hub dir>/checkpoints (torchvision),
#   clip: <torch hub dir>/clip (openai CLIP), hf: Hugging Face cache (repo id given).
# Metrics absent from this table either need no file (psnr, ssim, ms_ssim, cw_ssim, fsim, vif,
# gmsd, vsi, mad, nlpd, piqe, entropy) or are listed by the error at run time.
KNOWN_WEIGHTS: dict[str, list[str]] = {
    "lpips": ["tv:alexnet-owt-7be5be79.pth", "pyiqa:LPIPS_v0.1_alex-df73285e.pth"],
    "lpips+": ["tv:alexnet-owt-7be5be79.pth", "pyiqa:LPIPS_v0.1_alex-df73285e.pth"],
    "lpips-vgg": ["tv:vgg16-397923af.pth", "pyiqa:LPIPS_v0.1_vgg-a78928a0.pth"],
    "lpips-vgg+": ["tv:vgg16-397923af.pth", "pyiqa:LPIPS_v0.1_vgg-a78928a0.pth"],
    "stlpips": ["pyiqa:alex_shift_tolerant.pth"],
    "dists": ["tv:vgg16-397923af.pth", "pyiqa:DISTS_weights-f5e65c96.pth"],
    "niqe": ["pyiqa:niqe_modelparameters.mat"],
    "niqe_matlab": ["pyiqa:niqe_matlab_params.mat"],
    "ilniqe": ["pyiqa:ILNIQE_templateModel.mat"],
    "brisque": ["pyiqa:brisque_svm_weights.pth"],
    "brisque_matlab": ["pyiqa:brisque_matlab.mat"],
    "nrqm": ["pyiqa:NRQM_model.mat"],
    "pi": ["pyiqa:NRQM_model.mat", "pyiqa:niqe_modelparameters.mat"],
    "musiq": ["pyiqa:musiq_koniq_ckpt-e95806b9.pth"],
    "clipiqa": ["clip:RN50.pt"],
    "clipiqa+": ["clip:RN50.pt", "pyiqa:CLIP-IQA+_learned_prompts-603f3273.pth"],
    "maniqa": ["hf:timm/vit_base_patch8_224.augreg2_in21k_ft_in1k (model.safetensors)",
               "pyiqa:ckpt_koniq10k.pt"],
    "topiq_nr": ["hf:timm/resnet50.a1_in1k (model.safetensors)",
                 "pyiqa:cfanet_nr_koniq_res50-9a73138b.pth"],
    "topiq_fr": ["hf:timm/resnet50.a1_in1k (model.safetensors)",
                 "pyiqa:cfanet_fr_kadid_res50-2c4cc61d.pth"],
    "hyperiqa": ["hf:timm/resnet50.a1_in1k (model.safetensors)",
                 "pyiqa:HyperIQA-resnet50-koniq10k-c96c41b1.pth"],
    "liqe": ["clip:ViT-B-32.pt", "pyiqa:liqe_koniq.pt"],
    "qualiclip": ["clip:RN50.pt", "pyiqa:QualiCLIP.pth"],
    "arniqa": ["tv:resnet50-0676ba61.pth", "pyiqa:ARNIQA.pth", "pyiqa:regressor_koniq10k.pth"],
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
            + (f" All files '{metric}' needs: {', '.join(KNOWN_WEIGHTS[metric])} (pyiqa: "
               f"<torch hub dir>/pyiqa, tv: <torch hub dir>/checkpoints, clip: "
               f"<torch hub dir>/clip, hf: Hugging Face cache)."
               if metric in KNOWN_WEIGHTS else ""))


def offline_forced() -> bool:
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
               for k in ("PSSR_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def host_reachable(url: str, timeout: float = PROBE_TIMEOUT) -> bool:
    """True when an HTTP HEAD request to ``url`` gets any HTTP answer (redirects followed, 4xx/5xx
    count as an answer) within about ``timeout`` s. DNS, TCP, TLS and HTTP are all exercised, so
    transparent proxies that accept every TCP connection do not fool it. Cached per host."""
    if offline_forced():
        return False
    parts = urlparse(url)
    key = f"{parts.scheme}://{parts.netloc}"
    if key in _HOST_OK:
        return _HOST_OK[key]
    result = [False]

    def _try():  # in a thread, so a hanging DNS lookup / handshake is bounded as well
        import urllib.error
        import urllib.request

        try:
            req = urllib.request.Request(url, method="HEAD")
            with urllib.request.urlopen(req, timeout=timeout):
                result[0] = True
        except urllib.error.HTTPError:
            result[0] = True
        except Exception:
            pass

    t = threading.Thread(target=_try, daemon=True)
    t.start()
    t.join(timeout + 0.5)
    _HOST_OK[key] = result[0]
    return result[0]


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


def _replace_everywhere(orig: Callable, new: Callable, prefixes: tuple[str, ...],
                        undo: list) -> None:
    """Point every module-level name bound to ``orig`` (in modules under ``prefixes``) to ``new``."""
    for mname, mod in list(sys.modules.items()):
        if mod is None or not mname.startswith(prefixes):
            continue
        d = getattr(mod, "__dict__", None)
        if not d:
            continue
        for attr, val in list(d.items()):
            if val is orig:
                setattr(mod, attr, new)
                undo.append((mod, attr, orig))


def _hf_cache_in(weights_dir: Optional[str]) -> Optional[str]:
    """A Hugging Face hub cache (a folder of ``models--*`` folders) inside ``weights_dir``:
    the folder itself, ``hub/`` or ``huggingface/hub/``."""
    if not weights_dir:
        return None
    root = Path(weights_dir)
    for cand in (root, root / "hub", root / "huggingface" / "hub"):
        if cand.is_dir() and any(c.name.startswith("models--") for c in cand.iterdir()):
            return str(cand.resolve())
    return None


def _import_arch(metric: str) -> None:
    """Import the pyiqa arch module (and its helpers) that ``metric`` will build."""
    try:
        from pyiqa.default_model_configs import DEFAULT_CONFIGS
        import pyiqa.archs as archs
        from pyiqa.utils.registry import ARCH_REGISTRY

        net_type = DEFAULT_CONFIGS[metric]["metric_opts"]["type"]
        if net_type not in ARCH_REGISTRY:
            archs._lazy_import_arch(net_type)
    except Exception:  # private API moved: creation will still work, just less guarded
        pass


def _hf_request(exc: BaseException) -> tuple[Optional[str], Optional[str], Optional[str]]:
    """(repo_id, filename, url) of the Hugging Face / urllib request that raised ``exc``,
    read from the traceback frames (the exception texts do not name the file)."""
    repo = fname = url = None
    seen = set()
    e: Optional[BaseException] = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        tb = e.__traceback__
        while tb is not None:
            loc = tb.tb_frame.f_locals
            name = tb.tb_frame.f_code.co_name
            if name in ("hf_hub_download", "_hf_hub_download_to_cache_dir", "cached_files",
                        "cached_file") and loc.get("filename"):
                repo = loc.get("repo_id") or loc.get("path_or_repo_id") or repo
                fname = str(loc.get("filename"))
            elif name == "_download" and isinstance(loc.get("url"), str) and not fname:
                url = loc["url"]
                fname = os.path.basename(url)
            tb = tb.tb_next
        e = e.__cause__ or e.__context__
    if repo and str(repo).startswith("timm/") and fname == "pytorch_model.bin":
        fname = "model.safetensors (or pytorch_model.bin)"  # timm tries both, in that order
    return (str(repo) if repo else None), fname, url


def torch_hub_dir() -> str:
    import torch.hub

    return torch.hub.get_dir()


@contextlib.contextmanager
def weight_guard(metric: str, weights_dir: Optional[str] = None):
    """Within this context, pyiqa metric creation finds files in ``weights_dir`` and raises
    :class:`MissingWeightsError` instead of hanging on or failing in a download."""
    import torch
    import torch.hub
    import pyiqa.utils.download_util as du

    _import_arch(metric)  # pyiqa imports arch modules lazily: load them before patching
    undo: list = []
    prefixes = ("pyiqa", "torchvision", "torch.hub", "timm", "clip")

    def _need(url: str, file_name: str, folder: str, downloader: Callable, *a, **kw):
        if not host_reachable(url):
            raise MissingWeightsError(metric, file_name, folder, weights_dir, url,
                                      "download host unreachable or offline mode set")
        prev = socket.getdefaulttimeout()
        if prev is None:  # urllib downloads have no timeout of their own: a stall must end
            socket.setdefaulttimeout(DOWNLOAD_STALL_TIMEOUT)
        try:
            return downloader(*a, **kw)
        except MissingWeightsError:
            raise
        except Exception as e:  # network failed mid-way, HTTP error, ...
            raise MissingWeightsError(metric, file_name, folder, weights_dir, url,
                                      f"{type(e).__name__}: {e}") from e
        finally:
            socket.setdefaulttimeout(prev)

    # 1. pyiqa's load_file_from_url
    orig_lffu = du.load_file_from_url

    def lffu(url, model_dir=None, progress=True, file_name=None):
        fname = file_name or os.path.basename(urlparse(url).path)
        folder = model_dir or du.DEFAULT_CACHE_DIR
        target = os.path.abspath(os.path.join(folder, fname))
        if os.path.isfile(target):
            return target
        found = find_in_dir(weights_dir, fname)
        if found:
            return found
        return _need(url, fname, folder, orig_lffu, url, model_dir, progress, file_name)

    _replace_everywhere(orig_lffu, lffu, prefixes, undo)

    # 2. torchvision / torch.hub load_state_dict_from_url
    orig_lsd = torch.hub.load_state_dict_from_url

    def lsd(url, model_dir=None, map_location=None, progress=True, check_hash=False,
            file_name=None, weights_only=False):
        fname = file_name or os.path.basename(urlparse(url).path)
        folder = model_dir or os.path.join(torch_hub_dir(), "checkpoints")
        call = (url, model_dir, map_location, progress, check_hash, file_name, weights_only)
        if os.path.isfile(os.path.join(folder, fname)):
            return orig_lsd(*call)
        found = find_in_dir(weights_dir, fname)
        if found:
            return torch.load(found, map_location=map_location, weights_only=weights_only)
        return _need(url, fname, folder, orig_lsd, *call)

    _replace_everywhere(orig_lsd, lsd, prefixes, undo)

    # 3. CLIP downloads (pyiqa's copies of clip, e.g. archs.clip_model, and openai clip)
    for modname, mod in list(sys.modules.items()):
        if mod is None or not modname.startswith(("pyiqa", "clip")):
            continue
        orig_dl = getattr(mod, "_download", None)
        if not callable(orig_dl) or getattr(orig_dl, "__module__", None) != modname:
            continue

        def clip_dl(url, root, _orig=orig_dl):
            fname = os.path.basename(url)
            if os.path.isfile(os.path.join(root, fname)):
                return _orig(url, root)
            found = find_in_dir(weights_dir, fname)
            if found:
                return found
            return _need(url, fname, root, _orig, url, root)

        setattr(mod, "_download", clip_dl)
        undo.append((mod, "_download", orig_dl))

    # 4. Hugging Face hub: go offline when the hub does not answer
    hf_const = None
    try:
        import huggingface_hub.constants as hf_const  # noqa: F811
    except Exception:
        pass
    hf_prev = None
    hf_cache_prev = None
    hf_local = _hf_cache_in(weights_dir)
    if hf_const is not None and hf_local:
        hf_cache_prev = hf_const.HF_HUB_CACHE
        hf_const.HF_HUB_CACHE = hf_local
    if hf_const is not None and not hf_const.HF_HUB_OFFLINE:
        if not host_reachable(getattr(hf_const, "ENDPOINT", "https://huggingface.co")):
            hf_prev = hf_const.HF_HUB_OFFLINE
            hf_const.HF_HUB_OFFLINE = True
            tf_hub = sys.modules.get("transformers.utils.hub")
            if tf_hub is not None and hasattr(tf_hub, "_is_offline_mode"):
                undo.append((tf_hub, "_is_offline_mode", tf_hub._is_offline_mode))
                tf_hub._is_offline_mode = True
    try:
        yield
    except MissingWeightsError:
        raise
    except Exception as e:
        hf_names = ("LocalEntryNotFoundError", "OfflineModeIsEnabled", "EntryNotFoundError",
                    "RepositoryNotFoundError")
        netty = (type(e).__name__ in hf_names or isinstance(e, (ConnectionError, TimeoutError))
                 or type(e).__name__ in ("URLError", "gaierror", "ConnectTimeout",
                                         "ConnectionError", "MaxRetryError"))
        text = str(e)
        if not netty and ("offline" in text.lower() or "huggingface.co" in text
                          or "cannot find the requested files" in text.lower()):
            netty = True
        if netty:
            folder = getattr(hf_const, "HF_HUB_CACHE", "the Hugging Face cache") \
                if hf_const is not None else "the Hugging Face cache"
            repo, fname, url = _hf_request(e)
            if fname:
                what = f"{fname} of the Hugging Face repo {repo}" if repo else fname
            else:
                first = text.strip().splitlines()[0] if text.strip() else type(e).__name__
                what = f"(download failed: {first[:200]})"
            raise MissingWeightsError(
                metric, what, folder, weights_dir, url,
                reason="no network; Hugging Face files are looked up only in the HF cache "
                       "(set HF_HOME / HF_HUB_CACHE to a cache that holds them)"
            ) from e
        raise
    finally:
        for mod, attr, val in reversed(undo):
            setattr(mod, attr, val)
        if hf_prev is not None:
            hf_const.HF_HUB_OFFLINE = hf_prev
        if hf_cache_prev is not None:
            hf_const.HF_HUB_CACHE = hf_cache_prev
