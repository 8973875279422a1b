"""Linear mixed models of ROI effects: the crossover model per node and pathway.

Model (per node): ``effect ~ 0 + condition (cell means) + C(period, Sum)``, with a
random intercept per subject (REML, profiled over the variance ratio:
:mod:`fmri_pain.pathways.reml`). Period is
categorical (a crossover with three periods: habituation need not be linear)
and sum-coded, so each condition's coefficient is its mean over periods and a
contrast over conditions is a difference of period-adjusted condition means.
This is the same model as ``effect ~ C(condition) + C(period)`` (any coding):
the estimates, standard errors and p values are identical.

Inference on contrasts uses small-sample degrees of freedom, not the normal
reference statsmodels reports for MixedLM (anti-conservative at n = 8: 8 % at
nominal 5 %). A t contrast ``l'b`` is referred to a t distribution with
Satterthwaite's df, ``2 (l'Cl)^2 / (g' A g)``, where ``C`` is the fixed-effect
covariance, ``g`` its gradient in the two variance components and ``A`` their
asymptotic covariance (inverse expected REML information) -- Giesbrecht & Burns
(1985, Biometrics 41:477); an F contrast to F(q, ddf) with the multi-df
approximation of Fai & Cornelius (1996, J Stat Comput Simul 54:363), as lmerTest
computes it (Kuznetsova et al. 2017, J Stat Softw 82(13)). For complete data
(every subject in every condition and period) these df are exact: a difference
between conditions gets the within-subject ANOVA's ``(n - 1)(k - 1) - (k - 1)``
df (k periods), a condition mean the Satterthwaite combination of the subject
and residual mean squares. When every subject contributes one observation (a
one-condition study) the random intercept is not identifiable and the model is
ordinary least squares with t tests (``df`` = residual degrees of freedom:
``n - 1`` for a one-sample test).

With first-order carry-over in the model (``carryover=True``: sum-to-zero columns of the
previous condition, :mod:`fmri_pain.glm.second_level.carryover`), the within-subject
comparisons (condition differences, ``conditionF``, period, ``carryoverF`` and
``carryover<Cond>``) come from the within-subject model, subjects as fixed effects
(:mod:`fmri_pain.pathways.within`; exact t and F, the voxelwise model's estimates), and
the condition means from the random-intercept model with the carry-over columns.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from scipy import special
from statsmodels.regression.linear_model import OLS
from statsmodels.stats.multitest import multipletests

from fmri_pain.glm.second_level.carryover import CarryoverTerms, carryover_terms, embed
from fmri_pain.glm.second_level.site import site_indicators, sites_by_subject
from fmri_pain.pathways.reml import random_intercept_reml
from fmri_pain.pathways.within import is_within, subject_indicators, within_subject_fit
from fmri_pain.trial import CONDITIONS, trial_contrasts

LOGGER = logging.getLogger(__name__)

STAT_COLUMNS = ("level", "node", "pathway", "contrast", "stat_type", "estimate", "se", "ci_low",
                "ci_high", "stat", "df", "df_num", "df_method", "p", "p_fdr", "n_subjects", "n_obs",
                "model", "group_var")

DF_METHODS = {
    "satterthwaite": "Satterthwaite df of the REML random-intercept model (t), Fai-Cornelius "
                     "denominator df (F)",
    "residual": "residual df of ordinary least squares (n_obs - number of fixed effects)",
    "between-subjects": "n_subjects - 1 (conservative; the Satterthwaite df could not be computed)",
    "one-sample": "n_subjects - 1 (one-sample t test over subjects)",
    "paired": "n_subjects - 1 (paired t test over the subjects with both conditions)",
    "within-subject": "residual df of the within-subject model (subjects as fixed effects; used for "
                      "within-subject comparisons when carry-over is modelled): exact for normal errors",
}
"""What the ``df_method`` column of the statistics tables means."""


def crossover_design(data: pd.DataFrame, conditions: tuple[str, ...],
                     covariates: tuple[str, ...] = (),
                     sites: dict[str, str] | None = None) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Fixed-effects design of the crossover model.

    ``sites`` (subject -> site, multi-centre trials) adds mean-centred site indicators
    (``site-<label>``, :func:`~fmri_pain.glm.second_level.site.site_indicators`) after the
    covariates: site is between-subject, so it changes the condition means (now at the
    average site) and their standard errors, not the within-subject differences of a
    complete crossover.

    Returns
    -------
    exog : DataFrame
        Condition indicators (cell means, one per present condition), sum-coded
        period columns (when two or more periods are known for every row), then
        ``covariates``.
    present : list of str
        Conditions present in ``data``, in ``conditions`` order.
    period_columns : list of str
    """
    observed = set(data["condition"].astype(str))
    unknown = observed - set(conditions)
    if unknown:
        raise ValueError(f"conditions {sorted(unknown)} are not among {conditions}")
    present = [c for c in conditions if c in observed]
    exog = pd.DataFrame({c: (data["condition"].astype(str) == c).astype(float).to_numpy()
                         for c in present}, index=data.index)
    period_columns: list[str] = []
    if "period" in data.columns and data["period"].notna().all():
        periods = sorted(pd.to_numeric(data["period"]).astype(int).unique())
        values = pd.to_numeric(data["period"]).astype(int)
        if len(periods) > 1:
            last = periods[-1]
            for p in periods[:-1]:
                name = f"period{p}"
                exog[name] = (values == p).astype(float) - (values == last).astype(float)
                period_columns.append(name)
    for cov in covariates:
        exog[cov] = pd.to_numeric(data[cov]).astype(float)
    if sites:
        labels = data["subject"].astype(str).map(sites)
        if labels.nunique() > 1:
            indicators = site_indicators(labels.reset_index(drop=True))
            indicators.index = exog.index
            exog = pd.concat([exog, indicators], axis=1)
    return exog, present, period_columns


def fit_crossover(data: pd.DataFrame, value: str = "effect", *,
                  conditions: tuple[str, ...] = CONDITIONS,
                  covariates: tuple[str, ...] = (), carryover: bool = False,
                  sites: dict[str, str] | None = None):
    """Fit the crossover model to one ROI's long table (``sites``: see :func:`crossover_design`).

    Parameters
    ----------
    data : DataFrame
        Columns subject, condition, period (optional), sequence (optional), ``value``
        and ``covariates``.
    carryover : bool
        Add the first-order carry-over term (``carryover_<Cond>`` sum-to-zero columns,
        :mod:`fmri_pain.glm.second_level.carryover`) when the data can estimate it.

    Returns
    -------
    dict with the keys of :func:`fit_model` (params, cov, df, df_method, model
    "mixedlm"/"ols", group_var, ...) plus present (conditions), period_columns, periods
    and carryover (the :class:`~fmri_pain.glm.second_level.carryover.CarryoverTerms`, or None);
    with carry-over, within (:func:`~fmri_pain.pathways.within.within_subject_fit`), from which
    :func:`model_contrasts` takes the within-subject comparisons.
    """
    data = data.dropna(subset=[value] + list(covariates)).copy()
    if data.empty:
        raise ValueError(f"no finite {value!r} values to model")
    exog, present, period_columns = crossover_design(data, conditions, covariates, sites)
    endog = data[value].astype(float).to_numpy()
    groups = data["subject"].astype(str).to_numpy()
    carry, within = None, None
    if carryover:
        # site is between-subject: the within-subject model's subject columns absorb it
        within_exog = exog.drop(columns=[c for c in exog.columns if c.startswith("site-")])
        carry = roi_carryover_terms(data, conditions, within_exog)
        if carry.estimable:
            within = within_subject_fit(endog, pd.concat([within_exog, carry.columns], axis=1),
                                        groups)
            if within is None:
                carry = CarryoverTerms(carry.columns.iloc[:, :0], carry.levels, notes=[
                    "carry-over not modelled: no residual degrees of freedom within subjects"])
        exog = pd.concat([exog, carry.columns], axis=1)
    result = fit_model(endog, exog, groups)
    periods = sorted(pd.to_numeric(data["period"]).astype(int).unique()) if period_columns else []
    result.update(present=present, period_columns=period_columns, periods=periods, carryover=carry)
    if within is not None:
        # zero weight on the site columns it omits: within-subject comparisons do not involve them
        names = result["params"].index
        within["params"] = within["params"].reindex(names, fill_value=0.0)
        within["cov"] = within["cov"].reindex(index=names, columns=names, fill_value=0.0)
        result["within"] = within
    return result


def roi_carryover_terms(data: pd.DataFrame, conditions: tuple[str, ...],
                        exog: pd.DataFrame) -> CarryoverTerms:
    """The carry-over columns of one ROI's table, estimable within subjects given ``exog``."""
    groups = data["subject"].astype(str).to_numpy()
    return carryover_terms(data, conditions,
                           pd.concat([exog, subject_indicators(groups, exog.index)], axis=1))


def fit_model(endog: np.ndarray, exog: pd.DataFrame, groups: np.ndarray) -> dict:
    """Random-intercept linear mixed model (REML), or OLS when no subject has two observations.

    Returns
    -------
    dict with params (Series), cov (DataFrame), df (OLS residual df; NaN for the
    mixed model, whose df are per contrast), df_method, model, group_var,
    resid_var, n_subjects, n_obs, and for the mixed model the pieces of
    Satterthwaite's df (:func:`random_intercept_fit`).
    """
    n_subjects = len(np.unique(groups))
    result = None
    if pd.Series(groups).value_counts().max() > 1 and n_subjects > 1:
        try:
            reml = random_intercept_reml(endog, exog, groups)
            result = random_intercept_fit(exog, groups, reml.params, reml.group_var, reml.resid_var)
        except (np.linalg.LinAlgError, ValueError):
            result = None
        if result is None:
            LOGGER.warning("the random-intercept model of %d observations could not be fitted; "
                           "ordinary least squares instead (model column 'ols')", len(endog))
    if result is None:
        fit = OLS(endog, exog).fit()
        result = {"params": pd.Series(np.asarray(fit.params), index=exog.columns),
                  "cov": pd.DataFrame(np.asarray(fit.cov_params()), index=exog.columns,
                                      columns=exog.columns),
                  "df": float(fit.df_resid), "df_method": "residual", "model": "ols",
                  "group_var": np.nan, "resid_var": float(fit.scale)}
    result.update(n_subjects=n_subjects, n_obs=len(endog))
    return result


def random_intercept_fit(exog: pd.DataFrame, groups: np.ndarray, params: np.ndarray,
                         group_var: float, resid_var: float) -> dict:
    """The fit record of a random-intercept model at given variance components.

    With ``V = resid_var I + group_var ZZ'`` (Z: subject indicators), the
    fixed-effect covariance is ``C = (X' V^-1 X)^-1``, the GLS covariance at the
    REML variance components that lme4/lmerTest and SAS report (statsmodels'
    MixedLM ``cov_params`` inverts its observed information instead: equal for
    complete data, a fraction of a percent apart with drop-outs), its derivatives in
    ``(group_var, resid_var)`` are ``C X' V^-1 dV V^-1 X C``, and the asymptotic
    covariance of the REML variance estimates is the inverse of the expected
    information ``I_kl = tr(P dV_k P dV_l) / 2``, ``P = V^-1 - V^-1 X C X' V^-1``.

    Parameters
    ----------
    exog : DataFrame
        Fixed-effects design (full column rank).
    groups : array
        Subject of each row.
    params : array
        Fixed-effect estimates.
    group_var, resid_var : float
        Random-intercept and residual variances (REML estimates).

    Returns
    -------
    dict with params, cov, df (NaN), df_method ("satterthwaite"), model ("mixedlm"),
    group_var, resid_var, cov_jacobian (2, p, p) and theta_cov (2, 2).

    Raises
    ------
    ValueError
        If the residual variance is not positive or the information is singular.
    """
    if not (np.isfinite(resid_var) and resid_var > 0 and np.isfinite(group_var)):
        raise ValueError(f"variance components ({group_var}, {resid_var}) do not define a model")
    group_var = max(float(group_var), 0.0)
    x = exog.to_numpy(dtype=float)
    labels = np.asarray(groups).astype(str)
    z = (labels[:, None] == np.unique(labels)[None, :]).astype(float)
    zz = z @ z.T
    eye = np.eye(len(labels))
    vinv = np.linalg.inv(resid_var * eye + group_var * zz)
    vx = vinv @ x
    cov = np.linalg.inv(x.T @ vx)
    proj = vinv - vx @ cov @ vx.T
    derivatives = (zz, eye)
    jacobian = np.stack([cov @ (vx.T @ d @ vx) @ cov for d in derivatives])
    pd_ = [proj @ d for d in derivatives]
    info = 0.5 * np.array([[np.sum(a * b.T) for b in pd_] for a in pd_])
    theta_cov = np.linalg.inv(info)
    if not (np.all(np.isfinite(cov)) and np.all(np.isfinite(theta_cov))):
        raise ValueError("non-finite covariance of the random-intercept model")
    columns = exog.columns
    return {"params": pd.Series(np.asarray(params, dtype=float), index=columns),
            "cov": pd.DataFrame(cov, index=columns, columns=columns), "df": np.nan,
            "df_method": "satterthwaite", "model": "mixedlm", "group_var": group_var,
            "resid_var": float(resid_var), "cov_jacobian": jacobian, "theta_cov": theta_cov,
            "n_subjects": int(z.shape[1]), "n_obs": len(labels)}


def _satterthwaite_row(fit: dict, weights: np.ndarray) -> float:
    cov = fit["cov"].to_numpy()
    var = float(weights @ cov @ weights)
    grad = np.array([weights @ j @ weights for j in fit["cov_jacobian"]])
    denom = float(grad @ fit["theta_cov"] @ grad)
    return 2.0 * var ** 2 / denom if denom > 0 else np.nan


def satterthwaite_df(fit: dict, weights: np.ndarray) -> float:
    """Satterthwaite df of a t contrast (1 row) or F denominator df (several rows).

    For F, the contrast is rotated to the eigenvectors of ``L C L'`` and the df
    ``nu_m`` of each direction combined as Fai & Cornelius (1996) and lmerTest do:
    ``E = sum nu_m / (nu_m - 2)``, ``ddf = 2 E / (E - q)`` (2 if any ``nu_m <= 2``;
    the common value when all are equal).
    """
    weights = np.atleast_2d(np.asarray(weights, dtype=float))
    if weights.shape[0] == 1:
        return _satterthwaite_row(fit, weights[0])
    vcov = weights @ fit["cov"].to_numpy() @ weights.T
    values, vectors = np.linalg.eigh(vcov)
    keep = values > values.max() * 1e-10
    rotated = vectors[:, keep].T @ weights
    nu = np.array([_satterthwaite_row(fit, row) for row in rotated])
    if not np.all(np.isfinite(nu)):
        return np.nan
    if len(nu) == 1 or np.allclose(nu, nu[0], rtol=1e-8):
        return float(nu.mean())
    if np.any(nu <= 2):
        return 2.0
    expected = float(np.sum(nu / (nu - 2)))
    return 2 * expected / (expected - len(nu))


def _contrast_df(fit: dict, weights: np.ndarray) -> tuple[float, str]:
    if fit.get("df_method") != "satterthwaite":
        return float(fit["df"]), fit.get("df_method", "residual")
    df = satterthwaite_df(fit, weights)
    if np.isfinite(df) and df > 0:
        return float(df), "satterthwaite"
    return float(max(fit["n_subjects"] - 1, 1)), "between-subjects"


def contrast_test(fit: dict, weights: np.ndarray, alpha: float = 0.05) -> dict:
    """Test of ``weights @ params`` against 0 with small-sample df.

    One row: t test, ``estimate / se`` against t(df), CI with the t quantile.
    Several rows: F = Wald chi2 / q against F(q, df) (``df_num`` = q).
    ``df`` comes from :func:`satterthwaite_df` for the mixed model and is the
    residual df for OLS.
    """
    params = fit["params"].to_numpy()
    cov = fit["cov"].to_numpy()
    weights = np.atleast_2d(weights)
    est = weights @ params
    vcov = weights @ cov @ weights.T
    df, method = _contrast_df(fit, weights)
    if weights.shape[0] == 1:
        se = float(np.sqrt(vcov[0, 0]))
        stat = float(est[0] / se) if se > 0 else np.nan
        # scipy.special's t distribution functions: a frozen scipy.stats.t costs ~3 ms per call
        p = float(2 * special.stdtr(df, -abs(stat))) if np.isfinite(stat) and df > 0 else np.nan
        q = float(special.stdtrit(df, 1 - alpha / 2)) if df > 0 else np.nan
        return {"stat_type": "t", "estimate": float(est[0]), "se": se, "ci_low": float(est[0] - q * se),
                "ci_high": float(est[0] + q * se), "stat": stat, "df": df, "df_num": np.nan,
                "df_method": method, "p": p}
    rank = np.linalg.matrix_rank(vcov)
    stat = float(est @ np.linalg.pinv(vcov) @ est) / rank
    return {"stat_type": "F", "estimate": np.nan, "se": np.nan, "ci_low": np.nan, "ci_high": np.nan,
            "stat": stat, "df": df, "df_num": float(rank), "df_method": method,
            "p": float(special.fdtrc(rank, df, stat)) if np.isfinite(stat) and df > 0 else np.nan}


def model_contrasts(fit: dict, alpha: float = 0.05) -> list[dict]:
    """The trial's contrasts (over the conditions present), period and carry-over effects of a fit."""
    columns = list(fit["params"].index)
    within = fit.get("within")
    conds = [columns.index(c) for c in fit["present"]]

    def test(weights):
        # with carry-over, within-subject comparisons come from the within-subject fit
        if within is not None and is_within(weights, conds):
            return {**contrast_test(within, weights, alpha), "model": within["model"]}
        return contrast_test(fit, weights, alpha)

    rows = []
    for name, contrast in trial_contrasts(tuple(fit["present"])).items():
        w = np.atleast_2d(contrast.weights)
        full = np.zeros((w.shape[0], len(columns)))
        for j, cond in enumerate(contrast.conditions):
            full[:, columns.index(cond)] = w[:, j]
        rows.append({"contrast": name, **test(full if w.shape[0] > 1 else full[0])})
    period_cols = fit["period_columns"]
    if period_cols:
        # sum coding: effect of period k < K is its column, of the last period minus the sum
        k = len(period_cols)
        effects = np.vstack([np.eye(k), -np.ones((1, k))])
        labels = [str(p) for p in fit["periods"]]
        for i in range(1, k + 1):
            w = np.zeros(len(columns))
            for j, col in enumerate(period_cols):
                w[columns.index(col)] = effects[i, j] - effects[0, j]
            rows.append({"contrast": f"period{labels[i]}MinusPeriod{labels[0]}", **test(w)})
    carry = fit.get("carryover")
    if carry is not None and carry.estimable:
        for name, weights in carry.contrasts.items():
            rows.append({"contrast": name, **test(embed(weights, list(carry.columns), columns))})
    return rows


def _fit_rows(data: pd.DataFrame, value: str, conditions, alpha, carryover=False, sites=None,
              **ids) -> list[dict]:
    fit = fit_crossover(data, value, conditions=conditions, carryover=carryover, sites=sites)
    for note in (fit["carryover"].notes if fit["carryover"] is not None else []):
        LOGGER.warning("%s %s: %s", ids.get("level"), ids.get("node"), note)
    return [{**ids, "model": fit["model"], **row, "n_subjects": fit["n_subjects"],
             "n_obs": fit["n_obs"], "group_var": fit["group_var"]}
            for row in model_contrasts(fit, alpha)]


def pathway_means(effects: pd.DataFrame) -> pd.DataFrame:
    """Mean node effect per subject x session x pathway (nodes with data only)."""
    keys = [c for c in ("subject", "session", "condition", "period", "sequence") if c in effects.columns]
    out = (effects.dropna(subset=["effect"])
           .groupby(keys + ["pathway"], dropna=False, sort=False)["effect"].mean().reset_index())
    return out


def lateral_medial_index(effects: pd.DataFrame) -> pd.DataFrame:
    """Lateral minus medial pathway mean per subject x session (column ``effect``)."""
    means = pathway_means(effects)
    keys = [c for c in ("subject", "session", "condition", "period", "sequence") if c in means.columns]
    wide = means.pivot_table(index=keys, columns="pathway", values="effect", dropna=False).reset_index()
    if not {"lateral", "medial"} <= set(wide.columns):
        return pd.DataFrame(columns=keys + ["effect"])
    wide["effect"] = wide["lateral"] - wide["medial"]
    return wide[keys + ["effect"]]


def roi_statistics(effects: pd.DataFrame, *, conditions: tuple[str, ...] = CONDITIONS,
                   alpha: float = 0.05, value: str = "effect",
                   carryover: bool = False, site_column: str | None = None) -> pd.DataFrame:
    """Mixed models per node, per pathway (mean over nodes) and of the lateral-medial index.

    Parameters
    ----------
    effects : DataFrame
        The long ROI-effects table (:func:`fmri_pain.pathways.roi.extract_roi_effects`).
    carryover : bool
        Model first-order carry-over (rows ``carryoverF``, ``carryover<Cond>``; the
        condition contrasts adjusted for it).
    site_column : str, optional
        The table's site column (``group.site_column``): with two or more sites every model
        gets site indicators (:func:`crossover_design`); with a subject without a site the
        site is not modelled (a logged warning; a subject with two sites is an error).

    Returns
    -------
    DataFrame with columns ``STAT_COLUMNS``: one row per level (node/pathway/index)
    x unit x contrast; ``p_fdr`` is Benjamini-Hochberg over the units of a level
    for each contrast.
    """
    rows: list[dict] = []
    sites, note = sites_by_subject(effects, site_column)
    if note:  # recorded in roi_stats.json by the pathway stage
        LOGGER.warning("pathways: ROI models: %s", note)
    for node, data in effects.groupby("node", sort=False):
        if data[value].notna().sum() == 0:
            continue
        rows += _fit_rows(data, value, conditions, alpha, carryover, sites, level="node",
                          node=node, pathway=data["pathway"].iloc[0])
    for pathway, data in pathway_means(effects).groupby("pathway", sort=False):
        rows += _fit_rows(data, "effect", conditions, alpha, carryover, sites, level="pathway",
                          node=pathway, pathway=pathway)
    index = lateral_medial_index(effects)
    if not index.empty and index["effect"].notna().any():
        rows += _fit_rows(index, "effect", conditions, alpha, carryover, sites, level="index",
                          node="lateral_minus_medial", pathway="lateral-medial")
    table = pd.DataFrame(rows)
    return add_fdr(table, ["level", "contrast"]).reindex(columns=list(STAT_COLUMNS))


def add_fdr(table: pd.DataFrame, by: list[str], p: str = "p", out: str = "p_fdr") -> pd.DataFrame:
    """Benjamini-Hochberg adjusted p values within groups of ``by``."""
    table = table.copy()
    table[out] = np.nan
    if table.empty:
        return table
    for _, idx in table.groupby(by, sort=False).groups.items():
        pvals = table.loc[idx, p].to_numpy(dtype=float)
        ok = np.isfinite(pvals)
        if ok.any():
            adjusted = np.full(pvals.shape, np.nan)
            adjusted[ok] = multipletests(pvals[ok], method="fdr_bh")[1]
            table.loc[idx, out] = adjusted
    return table
