"""The dataset-level files of the simulated raw BIDS: description, README, participants and sessions."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fmri_pain._version import __version__
from fmri_pain.simulate.files import write_json, write_text, write_tsv
from fmri_pain.simulate.layout import ON_TRIAL_TYPE, TASK


def write_dataset_files(bids_dir: Path, subjects: list[dict], jobs: list[dict]) -> None:
    """``dataset_description.json``, README, participants, task sidecars and every subject's sessions table."""
    write_json({"Name": "Simulated SCS/DRGS/DUAL crossover trial (fmri-pain simulator)", "BIDSVersion": "1.8.0",
                "DatasetType": "raw", "License": "CC0",
                "Authors": ["fmri-pain simulator"],
                "GeneratedBy": [{"Name": "fmri-pain-simulator", "Version": __version__}]},
               bids_dir / "dataset_description.json")
    write_text(
        "# Simulated crossover trial\n\nPatients with refractory neuropathic leg pain receive spinal cord "
        "stimulation (SCS), dorsal root ganglion stimulation (DRGS) and both (DUAL) in a randomised "
        "crossover (Williams sequences). Each session ends with a block-design fMRI run, stimulator ON "
        "(trial_type 'on', 20 s) vs OFF (implicit baseline, 20 s). Simulated by fmri-pain; the ground "
        "truth is in ../truth/truth.json.\n", bids_dir / "README")
    rows = [{"participant_id": f"sub-{s['label']}", "sequence": "-".join(s["sequence"]), "age": s["age"],
             "sex": s["sex"], "pain_side": s["pain_side"]} for s in subjects]
    write_tsv(pd.DataFrame(rows), bids_dir / "participants.tsv")
    write_json({
        "sequence": {"Description": "treatment order, period 1 first (Williams design)"},
        "age": {"Description": "age at enrolment", "Units": "year"},
        "sex": {"Description": "sex", "Levels": {"F": "female", "M": "male"}},
        "pain_side": {"Description": "side of the painful leg",
                      "Levels": {"left": "left leg", "right": "right leg"}},
    }, bids_dir / "participants.json")
    write_json({"TaskName": TASK, "TaskDescription": "spinal/DRG stimulator switched ON and OFF in 20 s blocks"},
               bids_dir / f"task-{TASK}_bold.json")
    write_json({"trial_type": {"Description": "stimulator state", "Levels": {ON_TRIAL_TYPE: "stimulator ON"}},
                "onset": {"Units": "s"}, "duration": {"Units": "s"}}, bids_dir / f"task-{TASK}_events.json")
    for subj, job in zip(subjects, jobs):
        sub = f"sub-{subj['label']}"
        rows = [{"session_id": f"ses-{s['session']}", "condition": s["condition"], "period": s["period"],
                 "vas_pain": s["vas_pain"], "pain_relief": s["pain_relief"],
                 "stim_amplitude_ma": s["stim_amplitude_ma"]} for s in subj["sessions"][: job["n_sessions"]]]
        write_tsv(pd.DataFrame(rows), bids_dir / sub / f"{sub}_sessions.tsv")
        write_json({
            "condition": {"Description": "treatment of the period ending with this session",
                          "Levels": {"SCS": "spinal cord stimulation", "DRGS": "dorsal root ganglion stimulation",
                                     "DUAL": "SCS and DRGS together"}},
            "period": {"Description": "treatment period (1..3) in the crossover"},
            "vas_pain": {"Description": "pain intensity, visual analogue scale", "Units": "0-10"},
            "pain_relief": {"Description": "pain relief from baseline", "Units": "%"},
            "stim_amplitude_ma": {"Description": "stimulation amplitude (DUAL: sum of both)", "Units": "mA"},
        }, bids_dir / sub / f"{sub}_sessions.json")
