"""Codat's accounting platform keys, and resolution of a key or a platform name to both."""

PLATFORMS: dict[str, str] = {
    "trji": "Dynamics 365 Business Central",
    "fbrh": "FreeAgent",
    "akxx": "Oracle NetSuite",
    "pqsw": "QuickBooks Desktop",
    "qhyg": "QuickBooks Online",
    "gbol": "Xero",
    "knfz": "Sage Intacct",
    "ndsk": "QuickBooks Online Sandbox",
    "mqjo": "Codat Sandbox",
}


class UnknownPlatform(ValueError):
    """A platform key or name that is not in `PLATFORMS`."""

    def __init__(self, value: str) -> None:
        valid = ", ".join(f"{key} ({name})" for key, name in PLATFORMS.items())
        super().__init__(f"Unknown platform {value!r}: expected one of {valid}.")
        self.value = value


def resolve_platform(key_or_name: str) -> tuple[str, str]:
    """Return `(platform key, platform name)` for a key or a case-insensitive name."""
    wanted = key_or_name.strip().casefold()
    for key, name in PLATFORMS.items():
        if wanted in (key, name.casefold()):
            return key, name
    raise UnknownPlatform(key_or_name)
