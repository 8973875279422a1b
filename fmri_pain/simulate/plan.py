"""The trial's random draws: subjects, their sessions and behaviour, and the plan of every run.

Every draw is keyed by (seed, subject, condition), so subject ``k`` is the same whatever the number of
subjects or workers.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fmri_pain.simulate import model as M
from fmri_pain.simulate.responders import is_responder, responder_relief


def keyed_rng(seed: int, *keys: int) -> np.random.Generator:
    """The random generator of one draw, keyed by the seed and the draw's keys."""
    return np.random.default_rng(np.random.SeedSequence([seed, *keys]))


def plan_subjects(n_subjects: int, seed: int, scale: float, null: bool,
                  carryover: dict[str, float] | None = None,
                  responder_effect: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every subject's sequence, demographics, head offset, HRF latency, random effects and sessions.

    Each session holds the ROI amplitudes used (0 with ``null``; scaled by ``scale``) and its behaviour;
    with ``responder_effect`` (:mod:`fmri_pain.simulate.responders`) also its responder status.
    ``carryover`` (condition -> percent) is added to the amplitude of every ROI active in the
    session of the period right after that condition (first-order carry-over); each session
    records it.
    """
    carryover = dict(carryover or {})
    rng = keyed_rng(seed, 0)
    order = rng.permutation(len(M.WILLIAMS))
    subjects = []
    for i in range(n_subjects):
        srng = keyed_rng(seed, 1, i)
        block_right = int(keyed_rng(seed, 2, i // 3).integers(0, 3))  # one right-sided pain in every 3 subjects
        pain_side = "right" if i % 3 == block_right else "left"
        sequence = M.WILLIAMS[order[i % len(M.WILLIAMS)]]
        age = int(srng.integers(35, 76))
        sex = str(srng.choice(["F", "M"]))
        subject_re = {r.name: float(srng.normal(0.0, M.SUBJECT_SD)) for r in M.ROIS}
        session_re = {c: {r.name: float(srng.normal(0.0, M.SESSION_SD)) for r in M.ROIS} for c in M.CONDITIONS}
        offset = M.head_offset(srng)
        latency = float(srng.normal(0.0, M.HRF_PARAMS["subject_latency_sd_s"]))
        bias = srng.normal(0.0, 0.05, size=4)
        vas_baseline = float(srng.uniform(6.0, 8.5))
        sessions = []
        for period, cond in enumerate(sequence, start=1):
            amps = {}
            previous = sequence[period - 2] if period > 1 else None
            carry = carryover.get(previous, 0.0) if previous else 0.0
            for roi in M.ROIS:
                active = roi.amplitudes[cond] != 0 and roi.active_when_pain_side in (None, pain_side)
                value = roi.amplitudes[cond] + M.PERIOD_EFFECT * (period - 1) + subject_re[roi.name] \
                    + session_re[cond][roi.name] + carry
                amps[roi.name] = 0.0 if (null or not active) else round(scale * value, 6)
            lateral = np.mean([amps["pINS_L"], amps["pINS_R"], amps["S2_L"], amps["S2_R"]])
            relief = float(np.clip(20.0 + 15.0 * lateral + srng.normal(0.0, 8.0), 0.0, 95.0))
            responder = None
            if responder_effect is not None:  # its own keyed draws: every other draw stays the same
                rrng = keyed_rng(seed, 5, i, M.CONDITIONS.index(cond))
                responder = is_responder(responder_effect, rrng, cond)
                relief = responder_relief(rrng, responder)
                if responder:
                    amps[responder_effect["roi"]] = round(amps[responder_effect["roi"]]
                                                          + responder_effect["delta"], 6)
            vas = float(np.clip(vas_baseline * (1 - relief / 100) + srng.normal(0.0, 0.4), 0.0, 10.0))
            if cond == "SCS":
                stim = srng.uniform(2.0, 6.0)
            elif cond == "DRGS":
                stim = srng.uniform(0.3, 1.2)
            else:
                stim = srng.uniform(2.0, 6.0) + srng.uniform(0.3, 1.2)
            sessions.append({"session": cond.lower(), "condition": cond, "period": period, "amplitudes": amps,
                             "carryover_from": previous,
                             "carryover_percent": 0.0 if null else round(scale * carry, 6),
                             "pain_relief": round(relief, 1), "vas_pain": round(vas, 1),
                             "stim_amplitude_ma": round(float(stim), 2),
                             **({} if responder is None else {"responder": responder})})
        subjects.append({
            "label": f"{i + 1:02d}", "index": i, "sequence": sequence, "pain_side": pain_side, "age": age,
            "sex": sex, "offset": offset, "native_from_mni": M.rigid_matrix(offset), "latency": latency,
            "bias": bias, "subject_re": subject_re, "session_re": session_re, "sessions": sessions,
        })
    return subjects


def plan_run(seed: int, subj: dict, sess: dict, n_volumes: int, tr: float, n_slices: int,
             slice_times: np.ndarray, ppi: bool, null: bool, scale: float) -> M.RunPlan:
    """The random parts of one run: motion and jerks, noise, drift, global signal, slice spikes (and PPI)."""
    cond_index = M.CONDITIONS.index(sess["condition"])
    rng = keyed_rng(seed, 3, subj["index"], cond_index)
    motion, jerks = M.motion_trajectory(rng, n_volumes)
    n_fine = M.fine_times(n_volumes, tr).size
    gsig = M.smooth_series(rng, n_fine, 4.0, M.NOISE["global_signal_sd_percent"] / 100.0)
    # scanner drift grows with run length (about 0.6 % per 200 s, plus spatial gradients)
    dscale = n_volumes * tr / 200.0
    drift = np.column_stack([rng.normal(0.0, 0.006 * dscale, 2), rng.normal(0.0, 0.003 * dscale, (2, 3))])
    acq_order = np.argsort(slice_times, kind="stable")
    spikes = {}
    for j in jerks:
        length = max(n_slices // 3, 1)
        start = int(rng.integers(0, n_slices - length + 1))
        drop = float(rng.uniform(*M.NOISE["spike_drop_range"]))
        spikes[j] = (np.sort(acq_order[start:start + length]), drop)
    plan = M.RunPlan(
        subject=subj["label"], session=sess["session"], condition=sess["condition"], period=sess["period"],
        n_volumes=n_volumes, tr=tr, roi_amplitudes=sess["amplitudes"], latency=subj["latency"],
        motion=motion, jerks=jerks, rho=float(rng.uniform(*M.NOISE["ar1_rho_range"])), global_signal=gsig,
        drift_coefs=drift, spike_slices=spikes, noise_seed=int(rng.integers(0, 2**31 - 1)),
    )
    if ppi:
        box = M.boxcar(n_volumes, tr)
        neural = {r.name: M.smooth_series(rng, n_fine, 1.0, 1.0) for r in M.ROIS}
        for roi in M.ROIS:
            bold = M.convolve(neural[roi.name], subj["latency"])
            plan.roi_fluct[roi.name] = bold * (M.PPI_FLUCT_PSC / bold.std())
        seed_bold = M.convolve(neural[M.PPI_SEED], subj["latency"])
        factor = M.PPI_FLUCT_PSC / seed_bold.std()
        coupling = 0.0 if null else scale * M.PPI_COUPLING[sess["condition"]]
        plan.roi_fluct[M.PPI_TARGET] = plan.roi_fluct[M.PPI_TARGET] + coupling * factor * M.convolve(
            neural[M.PPI_SEED] * box, subj["latency"])
        plan.ppi_coupling = coupling
    return plan
