"""The Textual inspector: ``run_inspector`` is what the CLI calls, ``InspectApp`` the app."""

from __future__ import annotations

from olmo_inspect.tui.app import InspectApp, run_inspector

__all__ = ["InspectApp", "run_inspector"]
