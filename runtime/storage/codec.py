"""Payload codecs: what is done to an object's bytes before they are stored.

A ``Codec`` is a chain applied to every object a ``RunStore`` writes (run records,
batches, open markers, config documents, early signals, index objects, packages and
large values) and reversed when it reads one: compression (``zstd``, or ``zlib`` where
the ``zstandard`` module is missing), then authenticated encryption (``aes-gcm``, from
the ``cryptography`` package), and a MAC whenever the codec has keys. Keys come from a
``Keyring`` (key id -> 32 bytes; the last is the newest), given literally or read from
``$RAYLINE_KEYS`` in each process. See docs/codec.md.

A sealed object is one header line and its body::

    RLC <stages> <key id> <length> <check>\\n<body>

``stages`` are the transformations of the body in the order they were applied
(``zstd+aes-gcm``; ``-`` for none), ``key id`` the key that sealed it (``-``: none),
``length`` the body's size, ``check`` hex: HMAC-SHA256 of the object's name, header and
body under a key derived from the key (keyed), else the body's SHA-256.

Invariants:
- A reader verifies the check before anything else; no byte of a body whose MAC fails
  is decrypted, decompressed, decoded or unpickled.
- An object shorter than its header says (or with no complete header) is torn:
  ``CorruptTimelineError``, which a reader may take for never written (a torn last
  batch). A complete object whose MAC fails is ``IntegrityError``, and an object this
  process has no key for is ``CodecError``: neither is ever taken for torn.
- A codec with keys refuses every object without a MAC (an older ``RL1`` frame, a
  plain document, a keyless ``RLC`` object): one could be forged without the key.
- The MAC and the AES-GCM associated data cover the object's name (its key in the
  namespace), so a sealed object moved to another name does not verify.
- Sealing is deterministic (the AES-GCM nonce is derived from the key, the name and the
  plaintext), so the retry of an exclusive create writes the very same bytes.
- Reads follow the object's header, not the reader's chain: a codec reads every object
  sealed with a key of its keyring, whatever stages it was written with.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import re
import zlib
from typing import Any, Iterable, Mapping

from ..errors import CodecError, CorruptTimelineError, IntegrityError, InvalidInputError

log = logging.getLogger("rayline.storage")

MAGIC = b"RLC "
"""How a sealed object begins."""
KEYS_ENV = "RAYLINE_KEYS"
"""The environment variable a keyring is read from: ``k1:<base64>,k2:<base64>``."""
CODEC_ENV = "RAYLINE_CODEC"
"""The environment variable a client's default codec is read from: ``zstd,aes-gcm``."""
KEY_BYTES = 32
COMPRESSIONS = ("zstd", "zlib")
_NONE = "-"
_KEY_ID = re.compile(r"^[A-Za-z0-9_.@=+]{1,64}$")
_NONCE = 12


def _derive(key: bytes, label: str) -> bytes:
    """A subkey of ``key`` for one use (HKDF-Expand, SHA-256, one block)."""
    return hmac.new(key, f"rayline/{label}".encode() + b"\x01", hashlib.sha256).digest()


class Keyring:
    """Keys by id, oldest first: new objects are sealed with the newest, and an object is
    opened with the key whose id it records (so older keys keep their objects readable).

    Args:
        keys: key id -> 32 bytes, oldest first (a dict keeps its order), or pairs.

    A keyring given literally travels pickled (in Ray actor and task arguments) to every
    process that uses it; one read with :meth:`from_env` travels as the variable's name
    and is read again from that variable in each process, so the keys never leave it.
    """

    __slots__ = ("_keys", "_env")

    def __init__(self, keys: Mapping[str, bytes] | Iterable[tuple[str, bytes]], *,
                 _env: str | None = None) -> None:
        pairs = list(keys.items() if isinstance(keys, Mapping) else keys)
        if not pairs:
            raise InvalidInputError("a keyring needs at least one key")
        seen: dict[str, bytes] = {}
        for key_id, key in pairs:
            if not isinstance(key_id, str) or not _KEY_ID.match(key_id):
                raise InvalidInputError(f"key id {key_id!r}: use 1 to 64 letters, digits "
                                        "or _.@=+")
            if not isinstance(key, bytes) or len(key) != KEY_BYTES:
                size = len(key) if isinstance(key, bytes) else type(key).__name__
                raise InvalidInputError(f"key {key_id!r} must be {KEY_BYTES} bytes, "
                                        f"got {size}")
            if key_id in seen:
                raise InvalidInputError(f"key id {key_id!r} appears twice in the keyring")
            seen[key_id] = key
        self._keys = seen
        self._env = _env

    @classmethod
    def from_env(cls, variable: str = KEYS_ENV) -> Keyring | None:
        """The keyring in environment variable ``variable`` (``None`` if it is unset):
        ``id:<base64 of 32 bytes>`` pairs separated by commas, the last one newest."""
        text = os.environ.get(variable, "").strip()
        if not text:
            return None
        pairs = []
        for item in text.split(","):
            key_id, sep, encoded = item.strip().partition(":")
            if not sep:
                raise InvalidInputError(f"${variable}: {key_id[:20]!r}... is not id:<base64>")
            try:
                key = base64.b64decode(encoded.strip().replace("-", "+").replace("_", "/")
                                       + "=" * (-len(encoded.strip()) % 4), validate=True)
            except (binascii.Error, ValueError):
                raise InvalidInputError(f"${variable}: key {key_id!r} is not base64") from None
            pairs.append((key_id.strip(), key))
        return cls(pairs, _env=variable)

    @property
    def ids(self) -> tuple[str, ...]:
        """The key ids, oldest first."""
        return tuple(self._keys)

    @property
    def newest(self) -> str:
        """The id of the key new objects are sealed with."""
        return next(reversed(self._keys))

    @property
    def env(self) -> str | None:
        """The environment variable the keys are read from (``None``: given literally)."""
        return self._env

    def key(self, key_id: str) -> bytes | None:
        return self._keys.get(key_id)

    @property
    def fingerprint(self) -> str:
        """The key ids, each with a check value (a MAC of a constant, never the key):
        two processes with the same fingerprint hold the same keys."""
        return ",".join(f"{key_id}:{_derive(key, 'check').hex()[:8]}"
                        for key_id, key in self._keys.items())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Keyring) and other._keys == self._keys

    def __hash__(self) -> int:
        return hash(self.fingerprint)

    def __repr__(self) -> str:
        source = f"${self._env}" if self._env else "literal"
        return f"Keyring({', '.join(self._keys)}; {source})"

    def __reduce__(self) -> Any:
        if self._env is not None:  # read again where it lands: the keys stay in that env
            return (_keyring_from_env, (self._env,))
        return (Keyring, (list(self._keys.items()),))


def _keyring_from_env(variable: str) -> Keyring:
    found = Keyring.from_env(variable)
    if found is None:
        raise CodecError(f"${variable} is not set in this process (pid {os.getpid()}), which "
                         "reads and writes storage with keys from it: set it in the "
                         "environment of every process of the cluster (ray start, the job's "
                         "runtime_env) or pass the keys literally")
    return found


class Codec:
    """A chain applied to every stored object (see the module docstring).

    Args:
        stages: the chain, as a spec string (``"zstd,aes-gcm"``) or names: at most one
            compression (``zstd``: zstd where the ``zstandard`` module is importable, else
            zlib; ``zlib``) and at most one of ``aes-gcm`` (encrypt and authenticate) and
            ``hmac`` (authenticate only). A codec with keys always authenticates.
        keys: the keyring (or key id -> 32 bytes); by default ``$RAYLINE_KEYS`` when it
            is set, and it must be for ``aes-gcm`` and ``hmac``.

    Raises:
        InvalidInputError: an unknown or repeated stage, or malformed keys.
        CodecError: ``aes-gcm`` or ``hmac`` with no keys, or ``aes-gcm`` without the
            ``cryptography`` package (``pip install rayline[crypto]``).
    """

    __slots__ = ("compression", "encrypt", "keyring", "_fingerprint")

    def __init__(self, stages: str | Iterable[str] = (),
                 keys: Keyring | Mapping[str, bytes] | None = None, *,
                 _env_keys: bool = True) -> None:
        names = [s.strip().lower() for s in (stages.split(",") if isinstance(stages, str)
                                             else stages) if s.strip()]
        unknown = [n for n in names if n not in (*COMPRESSIONS, "aes-gcm", "hmac")]
        if unknown or len(set(names)) != len(names):
            raise InvalidInputError(f"codec {','.join(names)!r}: stages are zstd or zlib, "
                                    "then aes-gcm or hmac, each once"
                                    + (f" (unknown: {', '.join(unknown)})" if unknown else ""))
        compressions = [n for n in names if n in COMPRESSIONS]
        if len(compressions) > 1 or {"aes-gcm", "hmac"} <= set(names):
            raise InvalidInputError(f"codec {','.join(names)!r}: one compression and one of "
                                    "aes-gcm, hmac at most")
        self.compression: str | None = compressions[0] if compressions else None
        """``zstd`` or ``zlib`` (as configured), or ``None``."""
        self.encrypt = "aes-gcm" in names
        """Whether bodies are encrypted (AES-256-GCM)."""
        if keys is None and _env_keys:
            keys = Keyring.from_env()
        self.keyring: Keyring | None = keys if keys is None or isinstance(keys, Keyring) \
            else Keyring(keys)
        """The keys; with any, every object carries a MAC."""
        if self.keyring is None and (self.encrypt or "hmac" in names):
            raise CodecError(f"codec {','.join(names)!r} needs keys: set ${KEYS_ENV} "
                             "(id:<base64 of 32 bytes>, comma-separated, newest last) or "
                             "pass keys=Keyring({...})")
        if self.encrypt:
            _aesgcm_class()  # fail now, not at the first write
        self._fingerprint = "none" if self.name == "none" else \
            f"{self.name};{self.keyring.fingerprint if self.keyring else ''}"

    @classmethod
    def from_env(cls) -> Codec | None:
        """The codec ``$RAYLINE_CODEC`` names, with keys from ``$RAYLINE_KEYS``; ``None``
        when neither is set.

        Raises:
            CodecError: ``$RAYLINE_KEYS`` is set but ``$RAYLINE_CODEC`` is not.
        """
        spec = os.environ.get(CODEC_ENV, "").strip()
        if not spec:
            if os.environ.get(KEYS_ENV, "").strip():
                raise CodecError(f"${KEYS_ENV} is set but ${CODEC_ENV} is not: set "
                                 f"{CODEC_ENV}=zstd,aes-gcm (encrypt) or hmac (MAC only), "
                                 f"or unset {KEYS_ENV}")
            return None
        return cls(spec)

    @property
    def name(self) -> str:
        """The canonical spec: ``zstd,aes-gcm``; ``hmac`` shown when keys only MAC."""
        names = [self.compression] if self.compression else []
        if self.encrypt:
            names.append("aes-gcm")
        elif self.keyring is not None:
            names.append("hmac")
        return ",".join(names) or "none"

    @property
    def fingerprint(self) -> str:
        """The stages and the key ids with their check values (never the keys): two
        processes must agree on it to share a namespace. ``none`` for an empty chain,
        as for no codec at all."""
        return self._fingerprint

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Codec) and other._fingerprint == self._fingerprint

    def __hash__(self) -> int:
        return hash(self._fingerprint)

    def __repr__(self) -> str:
        return f"Codec({self.name!r}, keys={self.keyring!r})"

    def __setattr__(self, name: str, value: Any) -> None:
        if hasattr(self, "_fingerprint"):
            raise AttributeError(f"a Codec is immutable: cannot set {name}")
        object.__setattr__(self, name, value)

    def __reduce__(self) -> Any:
        return (_codec, (self.name if self.name != "none" else "", self.keyring))

    # ------------------------------------------------------------- sealing

    def seal(self, body: bytes, name: str) -> bytes:
        """``body`` transformed by the chain and framed, for the object called ``name``."""
        stages = []
        if self.compression is not None:
            kind, body = compress(body, self.compression)
            stages.append(kind)
        key_id = _NONE
        key = b""
        if self.keyring is not None:
            key_id = self.keyring.newest
            key = self.keyring.key(key_id) or b""
        if self.encrypt:
            body = _encrypt(key, name, body)
            stages.append("aes-gcm")
        header = b"RLC %s %s %d" % ("+".join(stages).encode() or _NONE.encode(),
                                    key_id.encode(), len(body))
        check = _mac(key, name, header, body) if key else hashlib.sha256(body).hexdigest()
        return b"%s %s\n%s" % (header, check.encode(), body)

    def open(self, data: bytes, name: str) -> bytes:
        """The body of sealed object ``name`` (``data`` begins with ``RLC``), checked
        and turned back.

        Raises:
            CorruptTimelineError: it is torn (shorter than its header says, or no whole
                header), or a keyless object fails its checksum.
            IntegrityError: its MAC fails, it has none while this codec has keys, or its
                header is malformed while this codec has keys.
            CodecError: it is sealed with a key this codec lacks (or has no keyring), or
                needs a module this process lacks.
        """
        return open_sealed(data, name, self.keyring, self.name)


def codec_of(value: Codec | str | None) -> Codec | None:
    """The codec a ``codec=`` argument means: a ``Codec``, a spec string (keys from
    ``$RAYLINE_KEYS``), or ``None`` for ``Codec.from_env()``."""
    if value is None or isinstance(value, Codec):
        return value if value is not None else Codec.from_env()
    if isinstance(value, str):
        return Codec(value)
    raise InvalidInputError(f"codec must be a Codec or a spec string such as 'zstd,aes-gcm', "
                            f"got {type(value).__name__}")


def fingerprint_of(codec: Codec | None) -> str:
    """``codec.fingerprint``, or ``none``: what a client and its registry compare."""
    return codec.fingerprint if codec is not None else "none"


def check_same(ours: Codec | None, theirs: str, namespace: str) -> None:
    """Raises ``CodecError`` unless a registry's codec fingerprint ``theirs`` is ours."""
    mine = fingerprint_of(ours)
    if theirs != mine:
        raise CodecError(
            f"namespace {namespace!r}: its registry reads and writes storage with codec "
            f"[{theirs}] and this client with [{mine}] (stages; key ids with their check "
            "values): give every process the same codec and keys ($RAYLINE_CODEC, "
            "$RAYLINE_KEYS or codec=), or use another namespace",
            codec=theirs.split(";")[0])


def _codec(stages: str, keyring: Keyring | None) -> Codec:
    """A codec unpickled: keys as it had them (read again from its variable, if from one),
    never picked up from this process's environment."""
    return Codec(stages, keyring, _env_keys=False)


def open_sealed(data: bytes, name: str, keyring: Keyring | None, reader: str) -> bytes:
    """``Codec.open`` for a reader with ``keyring`` (named ``reader`` in messages)."""
    head, sep, body = data.partition(b"\n")
    if not sep:
        raise CorruptTimelineError(f"{name}: sealed object with no whole header (torn write)")
    parts = head.split(b" ")
    if len(parts) != 5 or parts[0] + b" " != MAGIC or not parts[3].isdigit():
        _malformed(name, keyring, "malformed header")
    stages, key_id = parts[1].decode("ascii", "replace"), parts[2].decode("ascii", "replace")
    length = int(parts[3])
    if len(body) < length:
        raise CorruptTimelineError(f"{name}: {len(body)} of {length} bytes (torn write)")
    if key_id == _NONE:
        if keyring is not None:
            raise IntegrityError(
                f"{name}: refused: it carries no MAC (codec {stages}, no key), and codec "
                f"{reader} has keys ({', '.join(keyring.ids)}): written without a key, or "
                "forged", key_id="")
        if len(body) != length or hashlib.sha256(body).hexdigest().encode() != parts[4]:
            raise CorruptTimelineError(f"{name}: checksum mismatch (torn or altered write)")
    else:
        key = _key_for(name, keyring, key_id, stages)
        if len(body) != length or not hmac.compare_digest(
                _mac(key, name, b" ".join(parts[:4]), body).encode(), parts[4]):
            raise IntegrityError(
                f"{name}: refused: its MAC does not verify with key {key_id!r} (codec "
                f"{stages}): the object was altered, or key {key_id!r} is not the one that "
                "sealed it; nothing in it was read", key_id=key_id)
    for stage in reversed(stages.split("+") if stages != _NONE else []):
        if stage == "aes-gcm":
            body = _decrypt(_key_for(name, keyring, key_id, stages), name, body, key_id)
        elif stage in COMPRESSIONS:
            body = decompress(body, stage, name)
        else:
            raise CodecError(f"{name}: sealed with stage {stage!r} (codec {stages}), which "
                             "this rayline does not know: upgrade rayline")
    return body


def header_of(data: bytes) -> tuple[str, str] | None:
    """(stages, key id) of a sealed object's header, ``None`` if it is not one."""
    parts = data.partition(b"\n")[0].split(b" ")
    if not data.startswith(MAGIC) or len(parts) < 3:
        return None
    return parts[1].decode("ascii", "replace"), parts[2].decode("ascii", "replace")


def _malformed(name: str, keyring: Keyring | None, what: str) -> None:
    if keyring is not None:
        raise IntegrityError(f"{name}: refused: {what}", key_id="")
    raise CorruptTimelineError(f"{name}: {what}")


def _key_for(name: str, keyring: Keyring | None, key_id: str, stages: str) -> bytes:
    key = keyring.key(key_id) if keyring is not None else None
    if key is None:
        held = f"the keyring has only {', '.join(keyring.ids)}" if keyring is not None \
            else f"this process has no keys (${KEYS_ENV} or Client(codec=...))"
        raise CodecError(f"{name} is sealed by codec {stages} with key {key_id!r}, and {held}: "
                         f"read it with a keyring that holds {key_id!r}", key_id=key_id,
                         codec=stages)
    return key


def _mac(key: bytes, name: str, header: bytes, body: bytes) -> str:
    mac = hmac.new(_derive(key, "mac"), name.encode() + b"\n" + header + b"\n", hashlib.sha256)
    mac.update(body)
    return mac.hexdigest()


# ------------------------------------------------------------- AES-GCM

def _aesgcm_class() -> Any:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError:
        raise CodecError("codec aes-gcm needs the cryptography package: "
                         "pip install 'rayline[crypto]'", codec="aes-gcm") from None
    return AESGCM


def _encrypt(key: bytes, name: str, plain: bytes) -> bytes:
    """Nonce (derived from key, name and plaintext: deterministic) + ciphertext + tag."""
    nonce = hmac.new(_derive(key, "nonce"), name.encode() + b"\n" + plain,
                     hashlib.sha256).digest()[:_NONCE]
    sealed: bytes = _aesgcm_class()(_derive(key, "aes-gcm")).encrypt(nonce, plain,
                                                                     name.encode())
    return nonce + sealed


def _decrypt(key: bytes, name: str, body: bytes, key_id: str) -> bytes:
    from cryptography.exceptions import InvalidTag

    try:
        plain: bytes = _aesgcm_class()(_derive(key, "aes-gcm")).decrypt(
            body[:_NONCE], body[_NONCE:], name.encode())
    except InvalidTag:
        raise IntegrityError(f"{name}: refused: its AES-GCM tag does not verify with key "
                             f"{key_id!r}", key_id=key_id) from None
    return plain


# --------------------------------------------------------- compression

def _zstandard() -> Any:
    try:
        import zstandard
    except ImportError:
        return None
    return zstandard


_warned: set[str] = set()


def compress(body: bytes, wanted: str) -> tuple[str, bytes]:
    """(the compression used, ``body`` compressed): zstd falls back to zlib where the
    ``zstandard`` module is missing (the object records which)."""
    if wanted == "zstd":
        zstd = _zstandard()
        if zstd is not None:
            return "zstd", zstd.ZstdCompressor(level=3).compress(body)
        if "zstd" not in _warned:
            _warned.add("zstd")
            log.warning("codec zstd: the zstandard module is missing here; compressing with "
                        "zlib (pip install 'rayline[zstd]')")
    return "zlib", zlib.compress(body, 6)


def decompress(body: bytes, kind: str, name: str) -> bytes:
    if kind == "zlib":
        try:
            return zlib.decompress(body)
        except zlib.error as exc:
            raise CodecError(f"{name}: zlib cannot decompress it: {exc}", codec=kind) from exc
    zstd = _zstandard()
    if zstd is None:
        raise CodecError(f"{name} is compressed with zstd and the zstandard module is missing "
                         "here: pip install 'rayline[zstd]'", codec=kind)
    try:
        return zstd.ZstdDecompressor().decompress(body)  # type: ignore[no-any-return]
    except zstd.ZstdError as exc:
        raise CodecError(f"{name}: zstd cannot decompress it: {exc}", codec=kind) from exc
