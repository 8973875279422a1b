"""Multi-centre trials: the site of each subject as a between-subject term of the group models.

A ``site`` column of participants.tsv (the spec's ``group.site_column``) is used when it
exists and has two or more values. In the one-sample and paired models the site enters as
mean-centred indicators, one per site but the first (``site-<label>``): the intercept stays
the mean over all subjects (the centred columns are orthogonal to it) while the variance
between sites leaves the residuals. In the repeated-measures model site is between-subject:
its indicators are sums of subject columns, so the subject terms already absorb it and it is
not added (a note says so). The labels are kept on the design (``GroupDesign.sites``) for the
permutation stage: exchangeability blocks and variance groups.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from fmri_pain.glm.second_level.models import GroupDesign

LOGGER = logging.getLogger(__name__)

__all__ = ["SITE_PREFIX", "site_labels", "site_indicators", "add_site", "sites_by_subject"]

SITE_PREFIX = "site-"
"""Prefix of the site indicator columns of a group design (``site-<label>``)."""


def site_labels(rows: pd.DataFrame, site_column: str | None) -> tuple[pd.Series | None, str | None]:
    """Each row's site, or None with the reason when the site is not used.

    Parameters
    ----------
    rows : DataFrame
        One row per map, with the participants.tsv columns.
    site_column : str or None
        The column naming the site (``group.site_column``).

    Returns
    -------
    labels : Series of str or None
        The site of each row (None: no site terms).
    note : str or None
        Why the site is not used when the column exists but cannot be (missing values);
        None when it is used or simply absent (no column, one site).
    """
    if site_column is None or site_column not in rows:
        return None, None
    values = rows[site_column]
    missing = values.isna().to_numpy()
    if missing.all():
        return None, None
    if missing.any():
        who = sorted({f"sub-{s}" for s in rows.loc[missing, "subject"]}) if "subject" in rows \
            else [str(i) for i in np.flatnonzero(missing)]
        return None, (f"site ({site_column}) not modelled: no value for {', '.join(who)}")
    labels = values.astype(str).str.strip()
    if labels.nunique() < 2:
        return None, None
    return labels.reset_index(drop=True), None


def site_indicators(labels: pd.Series) -> pd.DataFrame:
    """Mean-centred indicators of every site but the first (sorted), named ``site-<label>``."""
    sites = sorted(labels.unique())
    out = pd.DataFrame(index=range(len(labels)))
    for site in sites[1:]:
        column = (labels.to_numpy() == site).astype(float)
        out[f"{SITE_PREFIX}{site}"] = column - column.mean()
    return out


def add_site(design: GroupDesign, site_column: str | None) -> GroupDesign:
    """The design with its site term (see the module docstring); records what was done in notes.

    Parameters
    ----------
    design : GroupDesign
        A one-sample, paired or repeated-measures design (its ``rows`` hold the site column).
    site_column : str or None
        ``group.site_column``.

    Returns
    -------
    GroupDesign
        The same design with ``sites`` set and, for one-sample and paired designs, the site
        columns added after the others (contrast weights padded with zeros).

    Raises
    ------
    ValueError
        A site indicator is collinear with the other terms (e.g. a covariate constant
        within sites): the model cannot separate them.
    """
    labels, note = site_labels(design.rows, site_column)
    if note:
        design.notes.append(note)
    if labels is None:
        return design
    design.sites = tuple(labels)
    counts = labels.value_counts().sort_index()
    described = ", ".join(f"{site} ({n})" for site, n in counts.items())
    if design.route == "repeated":
        design.notes.append(
            f"site ({site_column}: {described}) not added to the repeated-measures model: it is "
            "between-subject, so its indicators are sums of the subject columns, which already "
            "absorb it; condition differences are within-subject and so within-site")
        return design
    indicators = site_indicators(labels)
    indicators.index = design.design.index
    x = pd.concat([design.design, indicators], axis=1)
    if np.linalg.matrix_rank(x.to_numpy(dtype=float)) < x.shape[1]:
        raise ValueError(f"{design.route} model: site ({site_column}) is collinear with the other "
                         f"terms ({', '.join(map(str, design.design.columns))}); drop the "
                         "covariate that is constant within sites")
    design.design = x
    pad = np.zeros(indicators.shape[1])
    design.contrasts = {name: (np.concatenate([np.asarray(w, float), pad]) if np.ndim(w) == 1
                               else np.hstack([w, np.zeros((np.shape(w)[0], pad.size))]))
                        for name, w in design.contrasts.items()}
    # what the spec asks for, so logged (and recorded as the sidecars' Sites), not a note
    LOGGER.info("%s model: site (%s: %s) modelled with %d mean-centred indicator column(s)",
                design.route, site_column, described, indicators.shape[1])
    return design


def sites_by_subject(table: pd.DataFrame, site_column: str | None
                     ) -> tuple[dict[str, str] | None, str | None]:
    """Subject -> site of a long table (several rows per subject), or None and why not.

    The site is used when every subject has one site and there are two or more sites
    (as :func:`site_labels`); a subject with two different sites is an error.
    """
    if site_column is None or site_column not in table:
        return None, None
    per_subject = table.groupby(table["subject"].astype(str))[site_column]
    mixed = sorted(s for s, v in per_subject if v.dropna().astype(str).nunique() > 1)
    if mixed:
        raise ValueError(f"site ({site_column}) differs between rows of {', '.join(mixed)}")
    first = per_subject.agg(lambda v: v.dropna().iloc[0] if v.notna().any() else None)
    frame = pd.DataFrame({"subject": first.index, site_column: first.to_numpy()})
    labels, note = site_labels(frame, site_column)
    if labels is None:
        return None, note
    return dict(zip(frame["subject"], labels)), None
