"""From Settings to the detector's parts: which models (the zoo), stochastic settings, and the
threshold in force. Shared by the worker (app/wiring.py) and the offline commands (eval, calibrate),
so all three judge with the same configuration.

Threshold precedence: a ``threshold_file`` (written by ``streamdetect calibrate``) wins over
``threshold``; the file must exist, be valid, and have been fitted for the configuration in use
(same mode, models, k and noise scale), or start-up stops with an error saying so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from streamdetect.settings import ConfigError, Settings

if TYPE_CHECKING:
    from streamdetect.detector import StochasticSettings
    from streamdetect.models.zoo import LoadedZoo, Zoo


MINI_VOCABULARY_PROFILES = ("mini", "mini-robust", "tiny")  # their captioners speak the mini domain's words


def settings_zoo(settings: Settings) -> Zoo:
    from streamdetect.models import get_profile
    from streamdetect.models.zoo import resolve_zoo

    profile = get_profile(settings.profile, settings.model_dir, settings.device, settings.dtype)
    try:
        return resolve_zoo(profile, settings.mode, settings.specs("encoder_zoo"), settings.specs("generator_zoo"))
    except ValueError as exc:
        raise ConfigError(f"settings mode/encoder_zoo/generator_zoo: {exc}") from exc


def stochastic_settings(settings: Settings) -> StochasticSettings | None:
    from streamdetect.detector import StochasticSettings

    if settings.mode != "stochastic":
        return None
    stochastic = StochasticSettings(k=settings.encoders_per_request, noise_scale=settings.noise_scale)
    try:
        stochastic.encoders_per_request(len(settings_zoo(settings).encoders))
    except ValueError as exc:
        raise ConfigError(f"setting encoders_per_request={settings.encoders_per_request}: {exc}") from exc
    return stochastic


def fingerprint(settings: Settings) -> dict[str, Any]:
    """What a fitted threshold depends on; calibrate records it, the worker checks it."""
    zoo = settings_zoo(settings)
    stochastic = settings.mode == "stochastic"
    return {
        "mode": settings.mode,
        "captioner": zoo.captioner,
        "generators": list(zoo.generators),
        "encoders": list(zoo.encoders),
        "encoders_per_request": (settings.encoders_per_request or len(zoo.encoders)) if stochastic else None,
        "noise_scale": settings.noise_scale if stochastic else None,
    }


def resolve_threshold(settings: Settings) -> float:
    """The threshold the detector uses: the calibration file's when one is set, else ``threshold``."""
    if not settings.threshold_file:
        return settings.threshold
    from streamdetect.detector.threshold_file import ThresholdFileError, read_threshold

    try:
        return read_threshold(settings.threshold_file, fingerprint(settings))
    except ThresholdFileError as exc:
        raise ConfigError(str(exc)) from exc


def cascade_settings(settings: Settings) -> Any:
    """The cascade in force (detector.CascadeSettings), or None when it is off. Its exit threshold
    is the setting's, else the threshold file's cascade section (`calibrate` with the cascade on),
    which must have been fitted for the same first stage (and, for swap, the same vocabulary)."""
    from streamdetect.detector import CascadeSettings

    if settings.cascade == "off":
        return None
    if settings.mode != "vanilla":
        raise ConfigError("setting cascade: the cascade runs with mode=vanilla only")
    swaps = cascade_swaps(settings)
    if settings.cascade_exit_threshold is not None:
        return CascadeSettings(settings.cascade_exit_threshold, first_stage=settings.cascade, swaps=swaps)
    if settings.threshold_file:
        from streamdetect.detector.threshold_file import ThresholdFileError, read_cascade

        try:
            fitted = read_cascade(settings.threshold_file, fingerprint(settings))
        except ThresholdFileError as exc:
            raise ConfigError(str(exc)) from exc
        if fitted is not None:
            _check_fitted_cascade(settings, fitted, swaps)
            return CascadeSettings(fitted["exit_threshold"], fitted.get("exit_share"), settings.cascade, swaps)
    raise ConfigError(f"setting cascade={settings.cascade} needs an exit threshold: run `streamdetect calibrate "
                      f"--cascade {settings.cascade} --clean-dir CLEAN/ --threshold-file FILE` and pass "
                      "--threshold-file FILE, or set cascade_exit_threshold")


def cascade_swaps(settings: Settings) -> Any:
    """cascade=swap: the vocabulary its rivals come from (detector.Swaps); None for other cascades."""
    from streamdetect.detector import VocabularyError, load_swaps

    if settings.cascade != "swap":
        return None
    name = settings.cascade_vocabulary or ("mini" if settings.profile in MINI_VOCABULARY_PROFILES else "general")
    try:
        return load_swaps(name)
    except VocabularyError as exc:
        raise ConfigError(f"setting cascade_vocabulary: {exc}") from exc


def _check_fitted_cascade(settings: Settings, fitted: dict[str, Any], swaps: Any) -> None:
    mode = fitted.get("mode", "agreement")
    if mode != settings.cascade:
        raise ConfigError(f"setting cascade={settings.cascade}: the threshold file's exit threshold was fitted "
                          f"for cascade={mode}; calibrate again with --cascade {settings.cascade}")
    if swaps is not None and fitted.get("vocabulary") != swaps.fingerprint():
        raise ConfigError(f"setting cascade_vocabulary: the threshold file's exit threshold was fitted with another "
                          f"vocabulary (fingerprint {fitted.get('vocabulary')}, this one {swaps.fingerprint()}); "
                          "calibrate again with the vocabulary in use")


def threshold_source(settings: Settings) -> str:
    """Where the threshold in force comes from, as verdicts record it (``threshold_source``):
    a calibration file, an explicit setting, or the default, which no one fitted for these models."""
    if settings.threshold_file:
        return "calibration"
    return "setting" if settings.given("threshold") else "default"


def load_detector_models(settings: Settings, captioner: bool = True, generators: bool = True) -> LoadedZoo:
    """Load the configured zoo (building the random-weight models first when the profile has them)."""
    from streamdetect.models import ensure_profile_models
    from streamdetect.models.zoo import load_zoo

    stochastic_settings(settings)  # a k larger than the zoo fails before minutes of loading
    ensure_profile_models(settings.profile, settings.model_dir)
    return load_zoo(settings_zoo(settings), captioner=captioner, generators=generators)
