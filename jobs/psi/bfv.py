"""The values node's own encryption for PSI as a filter: TenSEAL BFV under a fresh key
per job, so that the node that learns which of its positions match (E) can multiply the
values node's (A's) numbers by those bits without reading them.

Why a key of its own and not the study key: every member holds the study's secret key, E
included, so a value sent under it would be a value sent in clear. A's key is its own:
only the public context (parameters and public key, never the secret key, no Galois or
relinearisation keys) leaves A; the secret context goes to A alone, sealed under a key
derived from A's job secret (:func:`keep`), since nothing is stored between steps.

Why BFV: it is exact integer arithmetic mod the plain modulus t, so the sums over the
intersection come back exact. t = 4503599627124737 is the largest prime below 2^52 with
t ≡ 1 (mod 2N), so that slots can be batched. Below 2^52 because A's and E's shares of a
sum (each in [0, t)) are added in the study's exact sum (scifed.he) and decoded as
float64 numbers, whose total (below 2^53) float64 holds exactly; the release node
reduces it mod t. Parameters: N = 8192, coefficient moduli [60, 40, 40, 60] (200 bits,
within SEAL's 128-bit bound of 218 for N = 8192): a fresh ciphertext has room for the
one plaintext multiplication and two additions E does (measured: every slot exact on
random full-range values). A ciphertext of N slots is about 330 kB.

E's product (:func:`masked_product`): each ciphertext slot j times E's bit b_j, plus
E's fresh public-key encryption of a uniform mask m_j (mod t). A decrypts w_j = v_j·b_j +
m_j: each slot uniform, and the sum over a block of slots S + Σm (mod t), uniform too;
E keeps −Σm (mod t) per block as its share. What A learns is therefore nothing of the
bits, under the semi-honest model; the product is not circuit-private in the strict sense
(no noise flooding: the noise of a returned ciphertext depends, in principle, on the
bits), which is stated in docs/job-types.md.
"""

from __future__ import annotations

import secrets
import struct

import tenseal as ts
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from scifed.errors import UserError
from scifed.he import open_box, seal_box

PLAIN_MODULUS = 4_503_599_627_124_737
POLY_MODULUS_DEGREE = 8192
COEFF_MOD_BIT_SIZES = (60, 40, 40, 60)
SLOTS = POLY_MODULUS_DEGREE
_LENGTH = struct.Struct("<I")


def new_key() -> ts.Context:
    """A fresh BFV key of this node for one job (kept only sealed to itself)."""
    return ts.context(ts.SCHEME_TYPE.BFV, poly_modulus_degree=POLY_MODULUS_DEGREE,
                      plain_modulus=PLAIN_MODULUS, coeff_mod_bit_sizes=list(COEFF_MOD_BIT_SIZES),
                      n_threads=1)


def public_bytes(ctx: ts.Context) -> bytes:
    """The parameters and the public key only."""
    return ctx.serialize(save_public_key=True, save_secret_key=False,
                         save_galois_keys=False, save_relin_keys=False)


def secret_bytes(ctx: ts.Context) -> bytes:
    return ctx.serialize(save_secret_key=True, save_galois_keys=False,
                         save_relin_keys=False)


def load_secret(data: bytes) -> ts.Context:
    return ts.context_from(data)


def load_public(data: bytes, sender: str) -> ts.Context:
    try:
        ctx = ts.context_from(data)
    except Exception:  # noqa: BLE001 - TenSEAL raises bare errors on bad bytes
        raise UserError(f"psi: the encryption context {sender} sent does not load") from None
    if not ctx.is_public() or not ctx.has_public_key():
        raise UserError(f"psi: the encryption context {sender} sent is not a public "
                        "context with a public key")
    return ctx


def encrypt(ctx: ts.Context, values: list[int]) -> bytes:
    """``values`` (each in [0, t)) in ciphertexts of at most N slots, framed."""
    return frame([ts.bfv_vector(ctx, values[i:i + SLOTS]).serialize()
                  for i in range(0, len(values), SLOTS)])


def masked_product(ctx: ts.Context, blob: bytes, bits: list[int], blocks: int,
                   sender: str) -> tuple[bytes, list[int]]:
    """E's step: the ciphertexts of ``blocks`` blocks of len(bits) slots each, slot-wise
    times ``bits`` plus a fresh encryption of uniform masks; returns the product and,
    per block, the masks' sum mod t (E's share is its negation)."""
    n = len(bits)
    chunks = unframe(blob, sender)
    factors = bits * blocks
    masks = [secrets.randbelow(PLAIN_MODULUS) for _ in factors]
    out = []
    for i, chunk in enumerate(chunks):
        try:
            ct = ts.bfv_vector_from(ctx, chunk)
        except Exception:  # noqa: BLE001
            raise UserError(f"psi: ciphertext {i} of {sender} does not load") from None
        part = slice(i * SLOTS, (i + 1) * SLOTS)
        if ct.size() != len(factors[part]):
            raise UserError(f"psi: the ciphertexts of {sender} do not hold {blocks} values "
                            f"for each of the {n} identifiers it sent")
        out.append((ct * factors[part] + ts.bfv_vector(ctx, masks[part])).serialize())
    if len(out) * SLOTS < len(factors):
        raise UserError(f"psi: the ciphertexts of {sender} hold fewer values than its "
                        "identifiers need")
    sums = [sum(masks[q * n:(q + 1) * n]) % PLAIN_MODULUS for q in range(blocks)]
    return frame(out), sums


def block_sums(ctx: ts.Context, blob: bytes, blocks: int, sender: str) -> list[int]:
    """A's step: decrypt the product and sum each block's slots mod t."""
    slots: list[int] = []
    for i, chunk in enumerate(unframe(blob, sender)):
        try:
            slots += ts.bfv_vector_from(ctx, chunk).decrypt()
        except Exception:  # noqa: BLE001
            raise UserError(f"psi: ciphertext {i} of {sender} does not decrypt") from None
    if len(slots) % blocks:
        raise UserError(f"psi: what {sender} returned is not {blocks} equal blocks")
    n = len(slots) // blocks
    return [sum(slots[q * n:(q + 1) * n]) % PLAIN_MODULUS for q in range(blocks)]


def keep(secret: bytes, purpose: str, data: bytes) -> bytes:
    """``data`` sealed for this node alone (a key from its job secret), to carry between
    its own steps through the coordinator."""
    return seal_box(_keep_key(secret, purpose), data, purpose.encode())


def kept(secret: bytes, purpose: str, blob: bytes) -> bytes:
    return open_box(_keep_key(secret, purpose), blob, purpose.encode())


def _keep_key(secret: bytes, purpose: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=b"scifed-psi-keep\0" + purpose.encode()).derive(secret)


def frame(parts: list[bytes]) -> bytes:
    return b"".join(_LENGTH.pack(len(p)) + p for p in parts)


def unframe(blob: bytes, sender: str) -> list[bytes]:
    parts, at = [], 0
    while at < len(blob):
        if at + _LENGTH.size > len(blob):
            raise UserError(f"psi: what {sender} sent is cut short")
        (size,) = _LENGTH.unpack_from(blob, at)
        at += _LENGTH.size
        if at + size > len(blob):
            raise UserError(f"psi: what {sender} sent is cut short")
        parts.append(blob[at:at + size])
        at += size
    return parts
