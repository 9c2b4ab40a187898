"""One copy of FLUX's attention processor body (diffusers 0.42's `FluxAttnProcessor.__call__`), with
the two places components change: the rotary embedding's layout and the attention call.

- RoPE: FLUX rotates interleaved pairs (0, 1), (2, 3), ... of each head. `rope-halves` permutes Q and
  K's head dimension in the weights so that pair i sits at (i, i + head_dim / 2); the processor then
  rotates contiguous halves, which the kernels producing Q and K read without stride-2 loads.
- The attention call: diffusers' dispatch, or a subclass's own kernel (`attn-fp8:static` hands its
  layer's calibrated scales to FP8 attention, which the dispatch cannot pass).
"""

from __future__ import annotations

import functools

import torch


@functools.cache
def flux_processor_class():
    """The processor class (built on first use: diffusers is imported lazily, as everywhere here)."""
    from diffusers.models.attention_dispatch import dispatch_attention_fn
    from diffusers.models.transformers.transformer_flux import (
        FluxAttnProcessor,
        _get_qkv_projections,
        apply_rotary_emb,
    )

    class FluxProcessor(FluxAttnProcessor):
        """FluxAttnProcessor with `rope_halves` (Q/K's head dimension permuted to halves by
        `rope-halves`) and `attend` as the one call a subclass replaces."""

        rope_halves = False

        def attend(self, attn, query, key, value, attention_mask):
            return dispatch_attention_fn(query, key, value, attn_mask=attention_mask,
                                         backend=self._attention_backend, parallel_config=self._parallel_config)

        def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                     image_rotary_emb=None):
            query, key, value, encoder_query, encoder_key, encoder_value = _get_qkv_projections(
                attn, hidden_states, encoder_hidden_states)
            query = attn.norm_q(query.unflatten(-1, (-1, attn.head_dim)))
            key = attn.norm_k(key.unflatten(-1, (-1, attn.head_dim)))
            value = value.unflatten(-1, (-1, attn.head_dim))
            if attn.added_kv_proj_dim is not None:
                encoder_query = attn.norm_added_q(encoder_query.unflatten(-1, (-1, attn.head_dim)))
                encoder_key = attn.norm_added_k(encoder_key.unflatten(-1, (-1, attn.head_dim)))
                encoder_value = encoder_value.unflatten(-1, (-1, attn.head_dim))
                query = torch.cat([encoder_query, query], dim=1)
                key = torch.cat([encoder_key, key], dim=1)
                value = torch.cat([encoder_value, value], dim=1)
            if image_rotary_emb is not None:
                unbind_dim = -2 if self.rope_halves else -1  # -2: diffusers' rotation of contiguous halves
                query = apply_rotary_emb(query, image_rotary_emb, use_real_unbind_dim=unbind_dim, sequence_dim=1)
                key = apply_rotary_emb(key, image_rotary_emb, use_real_unbind_dim=unbind_dim, sequence_dim=1)

            hidden_states = self.attend(attn, query, key, value, attention_mask)
            hidden_states = hidden_states.flatten(2, 3).to(query.dtype)

            if encoder_hidden_states is not None:
                encoder_hidden_states, hidden_states = hidden_states.split_with_sizes(
                    [encoder_hidden_states.shape[1], hidden_states.shape[1] - encoder_hidden_states.shape[1]], dim=1)
                hidden_states = attn.to_out[1](attn.to_out[0](hidden_states.contiguous()))
                encoder_hidden_states = attn.to_add_out(encoder_hidden_states.contiguous())
                return hidden_states, encoder_hidden_states
            return hidden_states

    return FluxProcessor

