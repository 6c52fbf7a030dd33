"""Keeping secrets out of the run directory, the logs and the terminal.

A secret can reach a run in several ways: a config key that looks secret (``hub_token``,
``api_key``, ``client_secret``), credentials inside a URL (``https://user:pass@host/v1``,
``?api_key=...``), a key typed where the NAME of an environment variable belongs (``*_env``), or
the value of a secret environment variable (``OPENAI_API_KEY``, ``HF_TOKEN``, the variables named by
``teacher.api_key_env`` / ``eval.judge.api_key_env``) that ends up in some string.

* :func:`redact` (config dumps: the run's ``config.yaml``), :func:`redact_url` (URLs, or any text
  holding URLs) and :func:`redact_overrides` (``key=value`` command-line overrides: Hydra's error
  line, the distributed relaunch's log line) replace secrets with ``***`` by their shape.
* Every secret value seen (from the command line, the composed config and those environment
  variables) is remembered, and :func:`mask` replaces it in any text: :class:`SecretFilter` does so
  in every log record, :func:`protect` in everything written to ``sys.stdout`` / ``sys.stderr`` (what
  Hydra and Python print themselves: composition errors, tracebacks, ``--cfg job``).
* :class:`RedactSecrets`, a Hydra callback (``conf/config.yaml``, ``hydra.callbacks``), arms both for
  the composed config and redacts the overrides Hydra prints when a job fails ("Error executing job
  with overrides") and the copy of the config a multirun writes (``<sweep dir>/multirun.yaml``).
  Hydra writes no ``.hydra/`` copies into the run directory (``hydra.output_subdir: null``).
* :func:`check_key_names`: an ``api_key_env`` holding a key rather than a variable name stops the
  run at start-up (exit 2), without echoing it.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from reasonalign.config import ConfigError

MASK = "***"
SECRET_HINTS = ("api_key", "apikey")  # anywhere in a key name
SECRET_WORDS = {"token", "secret", "password", "passwd", "credentials"}  # a whole word of a key name
# a tokenizer's special tokens are not credentials
NOT_SECRET = {"pad_token", "eos_token", "bos_token", "unk_token", "sep_token", "cls_token", "mask_token"}
URL_SECRET_PARAMS = {"key", "sig", "signature", "auth"}  # query parameters, besides secret-looking names
SECRET_ENV = ("OPENAI_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")  # always masked when set
KEY_NAME_SETTINGS = ("teacher.api_key_env", "eval.judge.api_key_env")  # hold a variable's NAME
MIN_SECRET_LEN = 6  # shorter values are redacted by their key or URL position, not searched for in text

_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/?#\s'\"]*)@")
_QUERY = re.compile(r"(?P<sep>[?&])(?P<name>[^=&#\s'\"]+)=(?P<value>[^&#\s'\",\]]*)")

_secrets: set[str] = set()  # every secret value seen in this process, for :func:`mask`


# ------------------------------------------------------------------------------- by their shape


def is_secret_key(key) -> bool:
    """``hf_token``, ``client_secret``, ``api_key`` look secret; ``max_new_tokens``, ``pad_token`` and
    ``api_key_env`` (the name of a variable, not its value) do not."""
    k = str(key).lower()
    if k.endswith("_env") or k.rsplit(".", 1)[-1] in NOT_SECRET:
        return False
    return any(h in k for h in SECRET_HINTS) or bool(SECRET_WORDS & set(re.split(r"[^a-z0-9]+", k)))


def is_env_name(value) -> bool:
    """Whether ``value`` is the name of an environment variable: ``OPENAI_API_KEY`` (capitals,
    digits, ``_``), or a lower-case identifier that is set in the environment. A key (``sk-...``,
    ``hf_AbC...``) is not."""
    v = str(value)
    return bool(_ENV_NAME.fullmatch(v)) or (bool(_IDENTIFIER.fullmatch(v)) and v in os.environ)


def _is_secret_param(name: str) -> bool:
    return is_secret_key(name) or name.lower() in URL_SECRET_PARAMS


def redact_url(text: str) -> str:
    """``text`` (a URL, or any text holding URLs) with the credentials of its URLs replaced:
    ``https://user:pass@host/v1`` -> ``https://***@host/v1``, ``...?api_key=abc&x=1`` ->
    ``...?api_key=***&x=1`` (also ``token=``, ``key=``, ``sig=``...)."""
    if not isinstance(text, str) or not text:
        return text
    if "@" in text:
        text = _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    if "=" in text:
        text = _QUERY.sub(lambda m: f"{m['sep']}{m['name']}={MASK}" if _is_secret_param(m["name"]) and m["value"]
                          else m[0], text)
    return text


def url_secrets(text: str) -> set[str]:
    """The credentials inside the URLs of ``text`` (what :func:`redact_url` hides)."""
    found = set()
    if not isinstance(text, str):
        return found
    for m in _USERINFO.finditer(text):
        user, _, password = m["userinfo"].partition(":")
        found.add(password or user)  # user:pass, or a token alone (https://TOKEN@host)
    for m in _QUERY.finditer(text):
        if _is_secret_param(m["name"]) and m["value"]:
            found.add(m["value"])
    return found


def _redact_value(key, value):
    if is_secret_key(key) and value:
        return MASK
    if str(key).lower().endswith("_env") and isinstance(value, str) and value and not is_env_name(value):
        return MASK  # a key typed where a variable's name belongs
    return redact(value)


def redact(node):
    """A copy of a config container with secrets replaced: the values of secret-looking keys, a key
    in an ``*_env`` setting, credentials in URLs, ``key=value`` overrides with a secret-looking key,
    and any secret value seen in this process."""
    if isinstance(node, dict):
        return {k: _redact_value(k, v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [_redact_arg(v) if isinstance(v, str) else redact(v) for v in node]
    if isinstance(node, str):
        return mask(node)
    return node


def _redact_arg(arg: str) -> str:
    key, eq, value = arg.partition("=")
    bare = key.lstrip("+~")
    if eq and value and (is_secret_key(bare) or (bare.lower().endswith("_env") and not is_env_name(value))):
        return f"{key}={MASK}"
    return mask(arg)


def redact_overrides(args):
    """Command-line arguments (``key=value`` overrides, a launcher's command line) with secrets
    replaced: ``trainer.sft.hub_token=***``, ``teacher.base_url=https://***@host/v1``."""
    if args is None:
        return None
    return [_redact_arg(str(a)) for a in args]


# -------------------------------------------------------------------------------- by their value


def add_secrets(values) -> None:
    """Remember secret values, so :func:`mask` hides them wherever they turn up."""
    for v in values:
        if isinstance(v, str) and len(v.strip()) >= MIN_SECRET_LEN:
            _secrets.add(v.strip())


def env_secrets(names=()) -> set[str]:
    """The values of the secret environment variables (:data:`SECRET_ENV` and ``names``) that are set."""
    return {os.environ[n] for n in (*SECRET_ENV, *names) if n and is_env_name(n) and os.environ.get(n)}


def override_secrets(args) -> set[str]:
    """The secret values in command-line overrides, and those of the variables they name."""
    found, names = set(), []
    for a in args or ():
        key, eq, value = str(a).partition("=")
        if not eq or not value:
            continue
        bare = key.lstrip("+~").lower()
        if is_secret_key(bare):
            found.add(value)
        elif bare.endswith("_env"):
            (names.append(value) if is_env_name(value) else found.add(value))
        found |= url_secrets(value)
    return found | env_secrets(names)


def config_secrets(node, key: str = "") -> set[str]:
    """The secret values in a config container (see :func:`redact`) and those of the variables
    its ``*_env`` settings name."""
    found: set[str] = set()
    if isinstance(node, dict):
        for k, v in node.items():
            found |= config_secrets(v, str(k))
        return found
    if isinstance(node, (list, tuple)):
        return set().union(*(config_secrets(v, key) for v in node)) if node else found
    if not isinstance(node, str) or not node:
        return found
    if is_secret_key(key):
        found.add(node)
    elif key.lower().endswith("_env"):
        found |= env_secrets([node]) if is_env_name(node) else {node}
    return found | url_secrets(node)


def mask(text):
    """``text`` with every secret value seen in this process and every URL's credentials replaced."""
    if not isinstance(text, str) or not text:
        return text
    for s in sorted(_secrets, key=len, reverse=True):
        if s in text:
            text = text.replace(s, MASK)
    return redact_url(text)


class SecretFilter(logging.Filter):
    """Masks secrets (:func:`mask`) in a log record's message and traceback; drops no record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # a malformed record: the handler reports it
            return True
        masked = mask(msg)
        if masked != msg:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask(record.exc_text)
        return True


_FILTER = SecretFilter()


def install_log_filter() -> None:
    """Put :class:`SecretFilter` on the root and ``reasonalign`` loggers and on all their handlers
    (a logger's own filter does not see records propagated from its children; a handler's does).
    Again after Hydra configures logging for a job, which replaces the handlers."""
    for name in ("", "reasonalign"):
        logger = logging.getLogger(name)
        for target in (logger, *logger.handlers):
            if _FILTER not in target.filters:
                target.addFilter(_FILTER)


class MaskedStream:
    """A text stream that writes through :func:`mask` (``sys.stdout`` / ``sys.stderr``)."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, s):
        self._stream.write(mask(s) if isinstance(s, str) else s)
        return len(s)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def protect(argv) -> None:
    """For an entry point, before Hydra sees ``argv``: remember the secrets in the command line and
    the environment, mask them in all that this process prints and logs."""
    add_secrets(override_secrets(argv) | env_secrets())
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, MaskedStream):
            setattr(sys, name, MaskedStream(stream))
    install_log_filter()


# ------------------------------------------------------------------------------------- start-up


def _select(cfg, path: str):
    node = cfg
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else getattr(node, part, None)
        if node is None:
            return None
    return node


def check_key_names(cfg) -> None:
    """An ``api_key_env`` must name an environment variable; a key typed there stops the run (exit 2)
    with one line that does not repeat it."""
    for path in KEY_NAME_SETTINGS:
        value = _select(cfg, path)
        if value and not is_env_name(value):
            raise ConfigError(f"{path} holds what looks like a key, not the name of an environment variable: "
                              f"put the key in an environment variable (export OPENAI_API_KEY=...) and set "
                              f"{path} to that variable's name (e.g. {path}=OPENAI_API_KEY)")


# ---------------------------------------------------------------------------------- Hydra hooks


def _container(config) -> dict:
    from omegaconf import OmegaConf

    node = OmegaConf.to_container(config, resolve=False) if OmegaConf.is_config(config) else dict(config)
    node = {k: v for k, v in node.items() if k != "hydra"}
    try:
        return OmegaConf.to_container(OmegaConf.create(node), resolve=True)
    except Exception:  # an interpolation that fails now fails in the job, with its own message
        return node


class RedactSecrets(Callback):
    """Hydra callback (``hydra.callbacks`` in ``conf/config.yaml``): see the module docstring."""

    def _arm(self, config) -> None:
        from omegaconf import OmegaConf

        add_secrets(config_secrets(_container(config)))
        overrides = OmegaConf.select(config, "hydra.overrides.task", default=None) if OmegaConf.is_config(config) \
            else None
        if overrides is not None:
            add_secrets(override_secrets(list(overrides)))
        install_log_filter()

    def on_run_start(self, config, **kwargs: Any) -> None:
        self._arm(config)

    def on_multirun_start(self, config, **kwargs: Any) -> None:
        self._arm(config)

    def on_job_start(self, config, **kwargs: Any) -> None:
        self._arm(config)  # Hydra has just replaced the log handlers
        self._redact_multirun_yaml()

    def on_job_end(self, config, job_return: Any, **kwargs: Any) -> None:
        # Hydra prints these when the job failed ("Error executing job with overrides: [...]"); on_job_end
        # runs in reverse order, so callbacks listed before this one see them redacted too
        job_return.overrides = redact_overrides(job_return.overrides)

    @staticmethod
    def _redact_multirun_yaml() -> None:
        """A multirun's sweeper saves the whole config, overrides included, as ``multirun.yaml``
        before its first job starts: rewrite it redacted."""
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode
        from omegaconf import OmegaConf

        hc = HydraConfig.get()
        if hc.mode != RunMode.MULTIRUN:
            return
        path = Path(str(hc.sweep.dir)) / "multirun.yaml"
        if path.is_file():
            text = path.read_text()
            clean = OmegaConf.to_yaml(OmegaConf.create(redact(OmegaConf.to_container(OmegaConf.create(text)))))
            if clean != text:
                path.write_text(clean)
