"""The Infini-attention retrofit against transformers' Llama and a naive per-token memory reference."""

from __future__ import annotations

import pytest
import torch

from infinicli import memory as mem
from infinicli.model import InfiniConfig, KVCache, LoRALinear


def test_empty_memory_equals_base_model(tiny_pair):
    hf, ours = tiny_pair
    ids = torch.randint(0, 97, (2, 16))
    with torch.no_grad():
        ref = hf(ids).logits
        got, m = ours.forward_segment(ids, ours.empty_memory(2))
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)
    assert m.segments == 1 and m.z.abs().sum() > 0  # the segment was written


def test_closed_gate_equals_independent_segments(tiny_pair):
    """With sigmoid(β) = 0 every segment is the base model on that segment alone (RoPE restarts)."""
    hf, ours = tiny_pair
    for blk in ours.model.layers:
        blk.self_attn.gate.data.fill_(mem.CLOSED_GATE)
    ids = torch.randint(0, 97, (1, 48))
    m = ours.empty_memory()
    with torch.no_grad():
        for s in range(3):
            seg = ids[:, 16 * s : 16 * (s + 1)]
            got, m = ours.forward_segment(seg, m)
            torch.testing.assert_close(got, hf(seg).logits, atol=1e-5, rtol=1e-4)


def test_memory_changes_later_segments(tiny_pair):
    _, ours = tiny_pair
    a = torch.randint(0, 97, (1, 16))
    b = torch.randint(0, 97, (1, 16))
    with torch.no_grad():
        _, m1 = ours.forward_segment(a, ours.empty_memory())
        with_mem, _ = ours.forward_segment(b, m1)
        without, _ = ours.forward_segment(b, ours.empty_memory())
    assert not torch.allclose(with_mem, without)


def naive_step(M, z, sq_t, sk_t, v_t, rule):
    """One token at a time: the equations written out with plain loops over the vector entries."""
    d = M.shape[0]
    r = torch.zeros(d, dtype=torch.float64)
    den = sum(sq_t[i] * z[i] for i in range(d)) + mem.EPS
    for j in range(d):
        r[j] = sum(sq_t[i] * M[i, j] for i in range(d)) / den
    return r


def test_update_and_retrieval_match_naive_reference():
    torch.manual_seed(1)
    B, H, T, d = 1, 2, 5, 4
    q, k, v = (torch.randn(B, H, T, d, dtype=torch.float64) for _ in range(3))
    M0 = torch.randn(B, H, d, d, dtype=torch.float64).abs()
    z0 = torch.rand(B, H, d, dtype=torch.float64) + 1
    sq, sk = mem.sigma(q), mem.sigma(k)
    for rule in ("linear", "delta"):
        M, z = mem.update(M0, z0, sk, v, rule)
        A = mem.retrieve(sq, M0, z0)
        for h in range(H):
            Mn, zn = M0[0, h].clone(), z0[0, h].clone()
            # retrieval uses the memory before the segment's update (eq. 3)
            for t in range(T):
                torch.testing.assert_close(A[0, h, t], naive_step(Mn, zn, sq[0, h, t], None, None, rule))
            # the segment's update: all tokens against the old memory, summed (eq. 4 / 5)
            dM = torch.zeros(d, d, dtype=torch.float64)
            for t in range(T):
                target = v[0, h, t]
                if rule == "delta":
                    target = target - naive_step(M0[0, h], z0[0, h], sk[0, h, t], None, None, rule)
                for i in range(d):
                    for j in range(d):
                        dM[i, j] += sk[0, h, t, i] * target[j]
            torch.testing.assert_close(M[0, h], M0[0, h] + dM)
            torch.testing.assert_close(z[0, h], z0[0, h] + sk[0, h].sum(0))


def test_delta_rule_same_write_twice_leaves_memory_unchanged():
    torch.manual_seed(2)
    B, H, T, d = 1, 3, 1, 8
    k, v = torch.randn(B, H, T, d, dtype=torch.float64), torch.randn(B, H, T, d, dtype=torch.float64)
    M, z = mem.empty_memory(1, B, H, d)
    M, z = M[0].double(), z[0].double()
    sk = mem.sigma(k)
    M1, z1 = mem.update_delta(M, z, sk, v)
    M2, _ = mem.update_delta(M1, z1, sk, v)
    # after one write the memory retrieves v for k (up to ε); writing it again adds (almost) nothing
    torch.testing.assert_close(mem.retrieve(sk, M1, z1), v, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(M2, M1, atol=1e-5, rtol=1e-5)
    M3, _ = mem.update_linear(M1, z1, sk, v)
    assert not torch.allclose(M3, M1)  # the linear rule does not have that property


def test_chunked_delta_write_is_consecutive_writes_of_the_chunks():
    torch.manual_seed(3)
    B, H, T, d = 2, 3, 10, 4
    sk = mem.sigma(torch.randn(B, H, T, d, dtype=torch.float64))
    v = torch.randn(B, H, T, d, dtype=torch.float64)
    M0, z0 = torch.zeros(B, H, d, d, dtype=torch.float64), torch.zeros(B, H, d, dtype=torch.float64)
    M, z = M0, z0
    for lo, hi in ((0, 4), (4, 8), (8, 10)):  # chunk 4: the last chunk is the remainder
        M, z = mem.update_delta(M, z, sk[..., lo:hi, :], v[..., lo:hi, :])
    Mc, zc = mem.update(M0, z0, sk, v, "delta", chunk=4)
    torch.testing.assert_close(Mc, M)
    torch.testing.assert_close(zc, z)
    whole = mem.update(M0, z0, sk, v, "delta")
    for c in (0, T, 3 * T):  # no chunking, or one chunk: the paper's single write
        torch.testing.assert_close(mem.update(M0, z0, sk, v, "delta", chunk=c)[0], whole[0])
    assert not torch.allclose(Mc, whole[0])  # into an empty memory, chunks differ from one write
    lin = mem.update(M0, z0, sk, v, "linear")
    torch.testing.assert_close(mem.update(M0, z0, sk, v, "linear", chunk=4)[0], lin[0])  # a sum


def test_write_chunk_changes_only_the_write(tiny_pair):
    _, ours = tiny_pair
    for blk in ours.model.layers:
        blk.self_attn.gate.data.fill_(0.3)
    torch.manual_seed(4)
    a, b = torch.randint(0, 97, (1, 16)), torch.randint(0, 97, (1, 16))
    with torch.no_grad():
        la, m1 = ours.forward_segment(a, ours.empty_memory())
        lb, _ = ours.forward_segment(b, m1)
        ours.icfg.write_chunk = 4
        try:
            la4, m4 = ours.forward_segment(a, ours.empty_memory())
            lb4, _ = ours.forward_segment(b, m4)
        finally:
            ours.icfg.write_chunk = 0
    torch.testing.assert_close(la4, la)  # the segment's own outputs read the memory before it
    assert not torch.allclose(m4.M, m1.M)
    assert not torch.allclose(lb4, lb)  # the next segment reads what the chunked write left


@pytest.mark.parametrize("chunks", [[1] * 10, [4, 1, 3, 1, 1]])
def test_kv_cache_decoding_equals_full_forward(tiny_pair, chunks):
    _, ours = tiny_pair
    for blk in ours.model.layers:
        blk.self_attn.gate.data.fill_(0.3)
    ctx = torch.randint(0, 97, (1, 32))
    final = torch.randint(0, 97, (1, 10))
    with torch.no_grad():
        m = ours.empty_memory()
        for s in range(2):
            _, m = ours.forward_segment(ctx[:, 16 * s : 16 * (s + 1)], m, logits=None)
        full, m_after = ours.forward_segment(final, m, write=False)
        assert m_after is m
        kv = KVCache()
        outs, pos = [], 0
        for n in chunks:
            o, _ = ours.forward_segment(final[:, pos : pos + n], m, write=False, kv=kv)
            outs.append(o)
            pos += n
    torch.testing.assert_close(torch.cat(outs, dim=1), full, atol=1e-5, rtol=1e-4)


def test_reading_without_logits_gives_same_memory(tiny_pair):
    _, ours = tiny_pair
    """Reading skips the last layer's output (attention and MLP) but must write the same memory."""
    ids = torch.randint(0, 97, (3, 1, 16))
    m1, m2 = ours.empty_memory(), ours.empty_memory()
    with torch.no_grad():
        for seg in ids:  # later segments read a non-empty memory in every layer, the last one included
            _, m1 = ours.forward_segment(seg, m1, logits=None)
            _, m2 = ours.forward_segment(seg, m2, logits="all")
    assert m1.segments == m2.segments == 3
    torch.testing.assert_close(m1.M, m2.M, rtol=0, atol=0)
    torch.testing.assert_close(m1.z, m2.z, rtol=0, atol=0)


def test_segment_split_into_layer_ranges_equals_the_whole_segment(tiny_pair):
    """forward_layers over [0, N) then [N, L), each with its slice of the memory, is forward_segment."""
    _, ours = tiny_pair
    L = ours.cfg.n_layers
    ids = torch.randint(0, 97, (3, 1, 16))
    whole = ours.empty_memory()
    lo, hi = ours.empty_memory(), ours.empty_memory()
    lo.M, lo.z, hi.M, hi.z = lo.M[:1], lo.z[:1], hi.M[1:], hi.z[1:]
    with torch.no_grad():
        for seg in ids:
            h_whole, whole = ours.forward_segment(seg, whole, hidden=True)
            x, lo = ours.forward_layers(ours.model.embed_tokens(seg), lo, 0, 1)
            x, hi = ours.forward_layers(x, hi, 1, L)
            torch.testing.assert_close(ours.model.norm(x), h_whole, rtol=0, atol=0)
    torch.testing.assert_close(torch.cat([lo.M, hi.M]), whole.M, rtol=0, atol=0)
    torch.testing.assert_close(torch.cat([lo.z, hi.z]), whole.z, rtol=0, atol=0)


def test_lora_starts_as_identity_and_merges(tiny_pair):
    _, ours = tiny_pair
    ids = torch.randint(0, 97, (1, 16))
    with torch.no_grad():
        ref, _ = ours.forward_segment(ids, ours.empty_memory())
        ours.icfg.lora_rank = 4
        ours.add_lora()
        same, _ = ours.forward_segment(ids, ours.empty_memory())
        torch.testing.assert_close(same, ref)
        for n, p in ours.named_parameters():
            if n.endswith("lora_B"):
                p.normal_(0, 0.05)
        lora_out, _ = ours.forward_segment(ids, ours.empty_memory())
        ours.merge_lora()
        merged, _ = ours.forward_segment(ids, ours.empty_memory())
    assert not torch.allclose(lora_out, ref)
    torch.testing.assert_close(merged, lora_out, atol=1e-5, rtol=1e-4)


def test_memory_scoped_lora_keeps_the_empty_memory_model_exact(tiny_pair, tmp_path):
    """lora_scope='memory': with nothing in memory the model is the base model whatever the LoRA weights;
    once memory holds something the deltas change the output, and they survive an adapter round trip."""
    from infinicli.loading import read_adapter, write_adapter

    _, ours = tiny_pair
    torch.manual_seed(1)
    segs = torch.randint(0, 97, (3, 1, 16))
    with torch.no_grad():
        ref_empty, _ = ours.forward_segment(segs[0], ours.empty_memory())
        m = ours.empty_memory()
        for s in segs[:2]:
            _, m = ours.forward_segment(s, m, logits=None)
        ref_full, _ = ours.forward_segment(segs[2], m, write=False)

        ours.icfg.lora_rank, ours.icfg.lora_scope = 4, "memory"
        ours.add_lora()
        names = [n for n, _ in ours.named_parameters() if ".lora_" in n]
        assert any(".mem_o_proj.lora_B" in n for n in names) and any(".mem_q_proj.lora_A" in n for n in names)
        for n, p in ours.named_parameters():
            if n.endswith("lora_B"):
                p.normal_(0, 0.05)
        empty, _ = ours.forward_segment(segs[0], ours.empty_memory())
        torch.testing.assert_close(empty, ref_empty, rtol=0, atol=0)
        m2 = ours.empty_memory()
        for s in segs[:2]:
            _, m2 = ours.forward_segment(s, m2, logits=None)
        full, _ = ours.forward_segment(segs[2], m2, write=False)
        assert not torch.allclose(m2.M, m.M)  # k/v deltas change what is written
        assert not torch.allclose(full, ref_full)

        write_adapter(ours, tmp_path / "a.safetensors")
        tensors, meta = read_adapter(tmp_path / "a.safetensors")
    assert set(tensors) == {n for n, _ in ours.named_parameters() if ".lora_" in n or n.endswith(".gate")}
    assert meta["infini_config"]["lora_scope"] == "memory"


def test_local_lora_layers_change_only_their_layers_and_merge(tiny_pair):
    """lora_local_layers with scope 'memory': the named layers also get LoRA on their own projections (rank
    lora_local_rank, the deltas' scale), starting as the identity; once trained they change the empty-memory
    model, and merging them into the weights gives the same output. Other layers keep only the deltas."""
    _, ours = tiny_pair
    ids = torch.randint(0, 97, (1, 16))
    with torch.no_grad():
        ref, _ = ours.forward_segment(ids, ours.empty_memory())
        ic = ours.icfg
        ic.lora_rank, ic.lora_alpha, ic.lora_scope = 4, 8.0, "memory"
        ic.lora_local_layers, ic.lora_local_rank = (1,), 2
        ours.add_lora()
        att0, att1 = ours.model.layers[0].self_attn, ours.model.layers[1].self_attn
        assert not isinstance(att0.q_proj, LoRALinear) and isinstance(att1.q_proj, LoRALinear)
        assert att1.q_proj.lora_A.shape[0] == 2 and att1.q_proj.scale == att1.mem_q_proj.scale == 2.0
        same, _ = ours.forward_segment(ids, ours.empty_memory())
        torch.testing.assert_close(same, ref, rtol=0, atol=0)
        for n, p in ours.named_parameters():
            if n.endswith("lora_B"):
                p.normal_(0, 0.05)
        local, _ = ours.forward_segment(ids, ours.empty_memory())
        assert not torch.allclose(local, ref)
        ours.merge_lora()
        assert not isinstance(att1.q_proj, LoRALinear) and att1.mem_q_proj is not None
        merged, _ = ours.forward_segment(ids, ours.empty_memory())
    torch.testing.assert_close(merged, local, atol=1e-5, rtol=1e-4)
    assert InfiniConfig.from_dict(ic.to_dict()).lora_local_layers == (1,)
    ic.lora_scope = "all"
    with pytest.raises(ValueError, match="lora_local_layers"):
        ours.add_lora()


def _two_segments(ours, seed: int):
    """Open every gate to sigmoid(0.3); (first segment's ids, run) where run() reads two random segments and
    returns (first logits, second logits, memory after both)."""
    for blk in ours.model.layers:
        blk.self_attn.gate.data.fill_(0.3)
    torch.manual_seed(seed)
    a, b = torch.randint(0, 97, (1, 16)), torch.randint(0, 97, (1, 16))

    def run():
        with torch.no_grad():
            la, m = ours.forward_segment(a, ours.empty_memory())
            lb, m2 = ours.forward_segment(b, m)
        return la, lb, m2

    return a, run


def test_mem_scale_starts_as_identity_sharpens_memory_queries_and_keys_and_round_trips(tiny_pair, tmp_path):
    """mem_scale: per layer and KV head, the memory queries and keys are multiplied by exp(s) before σ. At
    s = 0 nothing changes; s = ln a multiplies exactly the memory path's q and k of that KV head's query
    heads by a (local attention, and so a first segment's outputs, untouched); an adapter file restores it."""
    from infinicli.loading import read_adapter, write_adapter

    hf, ours = tiny_pair
    a, run = _two_segments(ours, seed=5)

    la, lb, m = run()
    ours.icfg.mem_scale = True
    ours.add_mem_scale()
    la0, lb0, m0 = run()
    torch.testing.assert_close(lb0, lb)  # s = 0: the paper's read
    torch.testing.assert_close(m0.M, m.M)

    att = ours.model.layers[0].self_attn
    x = torch.randn(1, 16, 64)
    with torch.no_grad():
        # queries [1, 4, T, d], keys [1, 2, T, d]
        q0, k0 = att._mem_queries(x, att.q_proj(x)), att._mem_keys(x, att.k_proj(x))
        att.mem_scale.copy_(torch.log(torch.tensor([2.0, 3.0])))
        q1, k1 = att._mem_queries(x, att.q_proj(x)), att._mem_keys(x, att.k_proj(x))
    per_q_head = torch.tensor([2.0, 2.0, 3.0, 3.0]).view(1, 4, 1, 1)  # query heads 0-1 share KV head 0
    torch.testing.assert_close(q1, q0 * per_q_head)
    torch.testing.assert_close(k1, k0 * torch.tensor([2.0, 3.0]).view(1, 2, 1, 1))
    la1, lb1, m1 = run()
    torch.testing.assert_close(la1, hf(a).logits, atol=1e-5, rtol=1e-4)  # empty memory: the base model
    assert not torch.allclose(m1.M, m.M) and not torch.allclose(lb1, lb)

    write_adapter(ours, tmp_path / "a.safetensors")
    tensors, meta = read_adapter(tmp_path / "a.safetensors")
    assert meta["infini_config"]["mem_scale"] is True
    torch.testing.assert_close(tensors["model.layers.0.self_attn.mem_scale"], att.mem_scale.detach())


def test_gate_query_starts_as_the_constant_gate_and_opens_per_token(tiny_pair, tmp_path):
    """gate_query: g_t = sigmoid(β + w·q_t/√d). At w = 0 it is the constant gate (same logits and memory);
    a w ≠ 0 changes the second segment's outputs but not the first's (empty memory: the base model), the
    gate differs between tokens, and an adapter file restores w."""
    from infinicli.loading import read_adapter, write_adapter

    hf, ours = tiny_pair
    a, run = _two_segments(ours, seed=6)

    la, lb, m = run()
    ours.icfg.gate_query = True
    ours.add_gate_query()
    att = ours.model.layers[0].self_attn
    assert att.gate_q.shape == (4, 16) and att.gate_q.abs().sum() == 0  # [H, d] of the tiny model
    la0, lb0, m0 = run()
    torch.testing.assert_close(lb0, lb)
    torch.testing.assert_close(m0.M, m.M)

    with torch.no_grad():
        for blk in ours.model.layers:
            blk.self_attn.gate_q.normal_(0, 2.0)
        x = torch.randn(1, 16, 64)
        g = torch.sigmoid(att._gate_logits(att.q_proj(x)))  # [1, H, T]
    assert g.shape == (1, 4, 16) and g.std(dim=-1).min() > 0.01  # the gate changes from token to token
    la1, lb1, m1 = run()
    torch.testing.assert_close(la1, hf(a).logits, atol=1e-5, rtol=1e-4)  # empty memory: the base model
    assert not torch.allclose(lb1, lb)

    write_adapter(ours, tmp_path / "a.safetensors")
    tensors, meta = read_adapter(tmp_path / "a.safetensors")
    assert meta["infini_config"]["gate_query"] is True
    torch.testing.assert_close(tensors["model.layers.0.self_attn.gate_q"], att.gate_q.detach())

    # the content gate: v·A_mem + u·A_dot on the logit; 0 at the start, then it changes the mixed reads
    ours.icfg.gate_content = True
    ours.add_gate_content()
    _, lb2, _ = run()
    torch.testing.assert_close(lb2, lb1)
    with torch.no_grad():
        for blk in ours.model.layers:
            blk.self_attn.gate_mem.normal_(0, 2.0)
            blk.self_attn.gate_loc.normal_(0, 2.0)
    la3, lb3, _ = run()
    torch.testing.assert_close(la3, la1)  # empty memory: nothing to weigh
    assert not torch.allclose(lb3, lb1)
    write_adapter(ours, tmp_path / "b.safetensors")
    tensors, meta = read_adapter(tmp_path / "b.safetensors")
    assert meta["infini_config"]["gate_content"] is True
    torch.testing.assert_close(
        tensors["model.layers.1.self_attn.gate_loc"], ours.model.layers[1].self_attn.gate_loc.detach()
    )


def test_package_adapter_sharpen_sets_the_chosen_layers(tiny_model_dir, tmp_path):
    """scripts/package_adapter.py --sharpen 1=2: the loaded model reads layer 1's memory with s = ln 2 and
    layer 0's as before; a malformed spec is one line and a non-zero exit."""
    import math
    import subprocess
    import sys
    from pathlib import Path

    from infinicli.loading import build_model, shape_id, write_adapter

    script = Path(__file__).resolve().parents[1] / "scripts" / "package_adapter.py"
    src, dst = tmp_path / "src.safetensors", tmp_path / "dst.safetensors"
    base = build_model(tiny_model_dir, adapter=None).model
    write_adapter(base, src, {"model_shape": shape_id(base.cfg)})
    cmd = [sys.executable, str(script), str(src), str(dst), "--segment-len", "16"]
    subprocess.run([*cmd, "--sharpen", "1=2"], check=True, capture_output=True)
    model = build_model(tiny_model_dir, adapter=dst).model
    assert model.icfg.mem_scale
    torch.testing.assert_close(model.model.layers[1].self_attn.mem_scale, torch.full((2,), math.log(2.0)))
    torch.testing.assert_close(model.model.layers[0].self_attn.mem_scale, torch.zeros(2))
    bad = subprocess.run([*cmd, "--sharpen", "1=-2"], capture_output=True, text=True)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().startswith("error: --sharpen")


def test_package_adapter_average_mixes_the_memory_deltas_and_gates_exactly(tiny_model_dir, tmp_path):
    """scripts/package_adapter.py --average-with B --weight 0.3: every memory-path LoRA update of the packaged
    adapter is 0.3·ΔA + 0.7·ΔB (rank 4 + 4 at the same scale), every gate the same mix; the training metadata
    is the source's; adapters with other tensors are refused in one line."""
    import subprocess
    import sys
    from pathlib import Path

    from infinicli.loading import build_model, read_adapter, shape_id, write_adapter

    script = Path(__file__).resolve().parents[1] / "scripts" / "package_adapter.py"
    files = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        m = build_model(tiny_model_dir, adapter=None).model
        m.icfg.lora_rank, m.icfg.lora_scope = 4, "memory"
        m.add_lora()
        with torch.no_grad():
            for n, p in m.named_parameters():
                if n.endswith((".lora_B", ".gate")):
                    p.normal_(0, 0.5)
        files.append(tmp_path / f"{seed}.safetensors")
        write_adapter(m, files[-1], {"model_shape": shape_id(m.cfg), "training": {"recipe": {"seed": seed}}})
    dst = tmp_path / "avg.safetensors"
    cmd = [sys.executable, str(script), str(files[0]), str(dst), "--segment-len", "16"]
    mix = ["--average-with", str(files[1]), "--weight", "0.3"]
    subprocess.run([*cmd, *mix], check=True, capture_output=True)

    a, b, avg = (build_model(tiny_model_dir, adapter=f).model for f in (*files, dst))
    assert avg.icfg.lora_rank == 8 and avg.icfg.segment_len == 16
    x = torch.randn(5, a.cfg.hidden_size)
    y = torch.zeros(5, a.cfg.hidden_size)
    n_checked = 0
    for la, lb, lm in zip(a.model.layers, b.model.layers, avg.model.layers, strict=True):
        for name in ("mem_q_proj", "mem_k_proj", "mem_v_proj", "mem_o_proj"):
            da, db, dm = (getattr(layer.self_attn, name, None) for layer in (la, lb, lm))
            if da is None:
                continue
            yo = y[:, : da.lora_B.shape[0]]
            torch.testing.assert_close(dm(x, yo), 0.3 * da(x, yo) + 0.7 * db(x, yo), atol=1e-5, rtol=1e-4)
            n_checked += 1
        torch.testing.assert_close(lm.self_attn.gate, 0.3 * la.self_attn.gate + 0.7 * lb.self_attn.gate)
    assert n_checked > 0
    _, meta = read_adapter(dst)
    assert meta["training"] == {"recipe": {"seed": 1}}
    assert meta["packaged"]["averaged_with"]["weight_of_from"] == 0.3

    # --weight 0 --average-layers 1: layer 1 is B's, every other layer stays A's (a swap of one layer)
    swap = tmp_path / "swap.safetensors"
    cmd_swap = [sys.executable, str(script), str(files[0]), str(swap), "--segment-len", "16"]
    mix = ["--average-with", str(files[1]), "--weight", "0", "--average-layers", "1"]
    subprocess.run([*cmd_swap, *mix], check=True, capture_output=True)
    sw = build_model(tiny_model_dir, adapter=swap).model
    assert read_adapter(swap)[1]["packaged"]["averaged_with"]["layers"] == [1]
    for i, (la, lb, ls) in enumerate(zip(a.model.layers, b.model.layers, sw.model.layers, strict=True)):
        src = lb if i == 1 else la
        torch.testing.assert_close(ls.self_attn.gate, src.self_attn.gate)
        d_src, d_sw = src.self_attn.mem_k_proj, ls.self_attn.mem_k_proj
        yo = y[:, : d_src.lora_B.shape[0]]
        torch.testing.assert_close(d_sw(x, yo), d_src(x, yo), atol=1e-5, rtol=1e-4)

    other = tmp_path / "other.safetensors"
    write_adapter(build_model(tiny_model_dir, adapter=None).model, other, {"model_shape": shape_id(a.cfg)})
    bad = subprocess.run([*cmd, "--average-with", str(other)], capture_output=True, text=True)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().startswith("error: --average-with")


def test_key_conv_starts_as_identity_matches_reference_and_round_trips(tiny_pair, tmp_path):
    """key_conv: the memory keys pass a causal per-channel convolution. At initialisation (identity) the
    memory is unchanged; with random taps it equals a naive loop over positions, is causal (a later token
    never changes an earlier key), and an adapter file restores it."""
    from infinicli.loading import read_adapter, write_adapter

    _, ours = tiny_pair
    torch.manual_seed(2)
    segs = torch.randint(0, 97, (2, 1, 16))

    def memory_after(model):
        m = model.empty_memory()
        with torch.no_grad():
            for s in segs:
                _, m = model.forward_segment(s, m, logits=None)
        return m

    ref = memory_after(ours)
    ours.icfg.key_conv = 3
    ours.add_key_conv()
    same = memory_after(ours)
    torch.testing.assert_close(same.M, ref.M)  # equal up to summation order (another memory layout)

    att = ours.model.layers[0].self_attn
    with torch.no_grad():
        for blk in ours.model.layers:
            blk.self_attn.mem_k_conv.normal_(0, 0.5)
        x = torch.randn(1, 16, 64)
        k_flat = att.k_proj(x)
        got = att._mem_keys(x, k_flat)  # [1, Hkv, 16, d]
        k = k_flat.view(1, 16, 2, 16).transpose(1, 2)
        w = att.mem_k_conv  # [Hkv, d, K]
        want = torch.zeros_like(k)
        for t in range(16):
            for j in range(3):
                if t - 2 + j >= 0:
                    want[:, :, t] += w[:, :, j] * k[:, :, t - 2 + j]
        torch.testing.assert_close(got, want)
        x2 = x.clone()
        x2[:, 10:] = torch.randn(1, 6, 64)
        got2 = att._mem_keys(x2, att.k_proj(x2))
        torch.testing.assert_close(got2[:, :, :10], got[:, :, :10])
        assert not torch.allclose(got2[:, :, 10:], got[:, :, 10:])
    changed = memory_after(ours)
    assert not torch.allclose(changed.M, ref.M)

    write_adapter(ours, tmp_path / "a.safetensors")
    tensors, meta = read_adapter(tmp_path / "a.safetensors")
    assert meta["infini_config"]["key_conv"] == 3
    conv = ours.model.layers[1].self_attn.mem_k_conv
    torch.testing.assert_close(tensors["model.layers.1.self_attn.mem_k_conv"], conv)
