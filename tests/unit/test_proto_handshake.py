"""APP_START challenge-response: proofs per the documented transcripts, the full exchange as
encoded messages, and every way a proof must fail (wrong key, port, nonce, epoch, reflection,
replay against a fresh challenge)."""

from __future__ import annotations

import hashlib
import hmac
import random
import struct

import pytest

from edifd.proto import (
    AppStart,
    AppStartAnswer,
    AppStartChallenge,
    AppStartPhase,
    BadMacError,
    ChannelKey,
    Cipher,
    EpochKeys,
    MalformedBodyError,
    Message,
    MessageType,
    PortRef,
    Response,
    SaDirection,
    SaUpdate,
    Status,
    UnknownEpochError,
    agent_proof,
    decode,
    encode,
    host_proof,
    new_epoch,
    new_nonce,
    verify_agent_proof,
    verify_host_proof,
)

K = bytes(range(32))
WRONG = bytes(range(32, 64))
NA = bytes([0xA1]) * 32
NH = bytes([0xB2]) * 32
EPOCH = 0x0123456789ABCDEF


def test_agent_proof_matches_documented_transcript() -> None:
    transcript = b"edifd app-start agent proof v1\x00" + struct.pack(">H", 3) + NA + NH
    assert agent_proof(K, 3, NA, NH) == hmac.new(K, transcript, hashlib.sha256).digest()


def test_host_proof_matches_documented_transcript() -> None:
    transcript = (
        b"edifd app-start host proof v1\x00" + struct.pack(">H", 3) + NA + NH + struct.pack(">Q", EPOCH)
    )
    assert host_proof(K, 3, NA, NH, EPOCH) == hmac.new(K, transcript, hashlib.sha256).digest()


def test_labels_cannot_collide_with_message_macs() -> None:
    # Message MAC inputs start with the magic b"EDIF"; proof transcripts with b"edifd".
    assert not b"edifd app-start agent proof v1\x00".startswith(b"EDIF")
    assert not b"edifd app-start host proof v1\x00".startswith(b"EDIF")


def test_full_exchange_over_the_wire() -> None:
    port = 1
    agent_key, host_key = ChannelKey(K), K  # both accepted forms
    na = new_nonce()
    hello = encode(
        Message(AppStart(AppStartPhase.HELLO, na, keepalive_ms=1000), port, request_id=1), agent_key
    )

    got = decode(hello, host_key)
    assert got.type is MessageType.APP_START and got.body.phase is AppStartPhase.HELLO
    nh = new_nonce()
    challenge = encode(Message(AppStartChallenge(got.body.agent_nonce, nh), port, request_id=1), host_key)

    ch = decode(challenge, agent_key).body
    assert ch.agent_nonce == na
    proof = agent_proof(agent_key, port, na, ch.host_nonce)
    pmsg = encode(
        Message(AppStart(AppStartPhase.PROOF, na, ch.host_nonce, proof, 1000), port, request_id=2), agent_key
    )

    p = decode(pmsg, host_key)
    assert verify_agent_proof(host_key, p.port_index, p.body.agent_nonce, nh, p.body.proof)
    epoch = new_epoch()
    answer = AppStartAnswer(epoch, host_proof(host_key, port, na, nh, epoch))
    amsg = decode(encode(Message(answer, port, request_id=2), host_key), agent_key)

    assert verify_host_proof(agent_key, port, na, nh, amsg.body.epoch, amsg.body.proof)
    assert amsg.body.epoch == epoch != 0

    # Every message of the handshake was unsealed (epoch 0, HMAC under K): no epoch keys needed.
    for data in (hello, challenge, pmsg):
        assert decode(data, host_key).epoch == 0
    # Both ends derive the epoch's keys from what they exchanged; the first sealed messages open.
    agent_keys = EpochKeys.derive(agent_key, port, na, ch.host_nonce, amsg.body.epoch)
    host_keys = EpochKeys.derive(host_key, p.port_index, p.body.agent_nonce, nh, epoch)
    sa = SaUpdate(
        PortRef(0x21, 0x010203, 1), 0x100, SaDirection.TX, Cipher.AES_GCM_128, bytes(range(16)), b"salt"
    )
    down = encode(Message(sa, port, epoch, request_id=3, sequence=1, ack=0), agent_key, keys=agent_keys)
    assert decode(down, host_key, keys=host_keys).body == sa
    up = encode(
        Message(Response(MessageType.SA_UPDATE, Status.OK), port, epoch, 3, 1), host_key, keys=host_keys
    )
    assert decode(up, agent_key, keys=agent_keys).body.status is Status.OK
    with pytest.raises(UnknownEpochError):  # the channel key alone opens nothing of the epoch
        decode(down, host_key)
    # A recorded epoch is useless to a later handshake with the same epoch number but new nonces.
    replayed = EpochKeys.derive(host_key, port, new_nonce(), nh, epoch)
    with pytest.raises(BadMacError):
        decode(down, host_key, keys=replayed)


def test_agent_proof_failures() -> None:
    good = agent_proof(K, 0, NA, NH)
    assert verify_agent_proof(K, 0, NA, NH, good)
    assert not verify_agent_proof(WRONG, 0, NA, NH, good)  # agent without the key
    assert not verify_agent_proof(K, 1, NA, NH, good)  # proof for another port's LUN
    assert not verify_agent_proof(K, 0, NA, new_nonce(), good)  # replay against a fresh challenge
    assert not verify_agent_proof(K, 0, NH, NA, good)  # nonces swapped
    assert not verify_agent_proof(K, 0, NA, NH, good[:16])
    assert not verify_agent_proof(K, 0, NA, NH, None)
    flipped = bytes([good[0] ^ 1]) + good[1:]
    assert not verify_agent_proof(K, 0, NA, NH, flipped)


def test_host_proof_failures() -> None:
    good = host_proof(K, 0, NA, NH, EPOCH)
    assert verify_host_proof(K, 0, NA, NH, EPOCH, good)
    assert not verify_host_proof(WRONG, 0, NA, NH, EPOCH, good)
    assert not verify_host_proof(K, 0, NA, NH, EPOCH + 1, good)  # epoch bound
    assert not verify_host_proof(K, 0, new_nonce(), NH, EPOCH, good)  # stale answer to an old hello
    assert not verify_host_proof(K, 2, NA, NH, EPOCH, good)
    # Reflection: an agent proof is never a host proof, whatever the epoch.
    assert agent_proof(K, 0, NA, NH) != good
    assert not verify_host_proof(K, 0, NA, NH, EPOCH, agent_proof(K, 0, NA, NH))


def test_bad_inputs_to_proof_helpers() -> None:
    for bad in (NA[:31], "x" * 32, None):
        with pytest.raises(MalformedBodyError):
            agent_proof(K, 0, bad, NH)  # type: ignore[arg-type]
    with pytest.raises(MalformedBodyError):
        agent_proof(K, 1 << 16, NA, NH)
    with pytest.raises(MalformedBodyError):
        host_proof(K, 0, NA, NH, 0)
    with pytest.raises(MalformedBodyError):
        host_proof(K, 0, NA, NH, 1 << 64)


def test_fresh_values() -> None:
    nonces = {new_nonce() for _ in range(64)}
    assert len(nonces) == 64 and all(len(n) == 32 for n in nonces)
    epochs = {new_epoch() for _ in range(64)}
    assert len(epochs) == 64 and all(0 < e < 1 << 64 for e in epochs)


def seeded(seed: int):
    r = random.Random(seed)
    return r.randbytes


def test_nonce_and_epoch_are_deterministic_with_a_seeded_rng() -> None:
    assert new_nonce(seeded(7)) == new_nonce(seeded(7)) == random.Random(7).randbytes(32)
    assert new_nonce(seeded(7)) != new_nonce(seeded(8))
    assert new_epoch(seeded(7)) == int.from_bytes(random.Random(7).randbytes(8), "big")


def test_a_zero_epoch_is_never_issued() -> None:
    draws = iter([bytes(8), bytes(8), (5).to_bytes(8, "big")])
    assert new_epoch(lambda n: next(draws)) == 5
