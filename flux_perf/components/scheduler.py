"""Fewer steps, another guidance scale, and a multistep solver for flow matching."""

from __future__ import annotations

from .base import Component, ComponentError, Phase, parse_float_param


class FewerSteps(Component):
    name = "steps"
    summary = "run N denoising steps instead of the scenario's (judged against the full-step reference)"
    exclusive = "steps"
    phase = Phase.SCHEDULE
    lossless = False
    default_param = "4"

    def validate_param(self) -> None:
        if not str(self.param).isdigit() or int(self.param) < 1:
            raise ComponentError(f"steps:{self.param}: the number of steps must be a positive integer")


    def adjust_scenario(self, scenario):
        return scenario.with_steps(int(self.param))


class GuidanceScale(Component):
    name = "guidance"
    summary = "another distilled-guidance scale than the scenario's 2.5 (default: the pipeline's own 3.5)"
    exclusive = "guidance"
    phase = Phase.SCHEDULE
    lossless = False
    # Not the scenarios' 2.5: a default equal to it measured a no-op (SSIM 1.0000 on the H100).
    default_param = "3.5"

    def validate_param(self) -> None:
        parse_float_param(self, 0.0, 100.0)


    def adjust_scenario(self, scenario):
        from dataclasses import replace

        return replace(scenario, guidance=float(self.param))


class UniPC(Component):
    name = "unipc"
    summary = "UniPC multistep (DPM-Solver++'s predictor-corrector successor) with flow sigmas"
    exclusive = "scheduler"
    phase = Phase.SCHEDULE
    lossless = False
    # No DPM-Solver++ component: in diffusers 0.42.1 DPMSolverMultistepScheduler.set_timesteps takes
    # no `sigmas`, which FluxKontextPipeline always passes (docs/components.md). UniPC takes both.

    def apply(self, pipe) -> None:
        from diffusers import UniPCMultistepScheduler

        # Flow sigmas with FLUX's exponential dynamic shift (mu from the image size), as the
        # Euler scheduler it replaces; FLUX's own config keys mean nothing to this class.
        pipe.scheduler = UniPCMultistepScheduler(
            num_train_timesteps=pipe.scheduler.config.num_train_timesteps,
            use_flow_sigmas=True, prediction_type="flow_prediction",
            use_dynamic_shifting=True, time_shift_type="exponential", solver_order=2,
        )


class WrongShift(Component):
    name = "wrong-shift"
    summary = "test-only planted regression: FLUX's dynamic shift switched off (bare flow-match sigmas)"
    exclusive = "scheduler"
    phase = Phase.SCHEDULE
    lossless = False
    test_only = True

    def apply(self, pipe) -> None:
        config = dict(pipe.scheduler.config)
        pipe.scheduler = type(pipe.scheduler).from_config(config, use_dynamic_shifting=False, shift=1.0)

