"""The app's typed state: the settings, the served store, and what is made from them once per app."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from flask import Flask, current_app

from fhir_pub.conformance import Conformance
from fhir_pub.settings import Settings
from fhir_pub.store import Store
from fhir_pub.validation import Validator

KEY = "fhir_pub"


@dataclass
class AppState:
    """What every request of one app shares: read-only once made (the validator is made on first use)."""

    settings: Settings
    store: Store
    clock: Callable[[], float] = time.time  # export jobs' expiry and polling (a test may set its own)
    _validator: Validator | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def validator(self) -> Validator:
        """The validator for the publication's own profiles, made once from what the build stored."""
        with self._lock:
            if self._validator is None:
                found = {r["url"]: r for r in self.store.conformance()}
                self._validator = Validator(Conformance(self.store.path, found))
            return self._validator


def install(app: Flask, state: AppState) -> None:
    """Attach the state to an app."""
    app.extensions[KEY] = state


def app_state() -> AppState:
    """The state of the app handling the current request."""
    state: AppState = current_app.extensions[KEY]
    return state
