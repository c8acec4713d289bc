"""Checks of the attachments: types mailbox providers block or treat as malware carriers."""

from __future__ import annotations

from mailgate.analysis.draft import Draft
from mailgate.analysis.issues import Issue

# Gmail refuses these outright ("blocked for security reasons"); most filters agree.
RISKY_EXTENSIONS = frozenset(
    [
        ".ade",
        ".adp",
        ".apk",
        ".appx",
        ".appxbundle",
        ".bat",
        ".cab",
        ".chm",
        ".cmd",
        ".com",
        ".cpl",
        ".diagcab",
        ".diagcfg",
        ".diagpack",
        ".dll",
        ".dmg",
        ".ex",
        ".ex_",
        ".exe",
        ".hta",
        ".img",
        ".ins",
        ".iso",
        ".isp",
        ".jar",
        ".jnlp",
        ".js",
        ".jse",
        ".lib",
        ".lnk",
        ".mde",
        ".msc",
        ".msi",
        ".msix",
        ".msixbundle",
        ".msp",
        ".mst",
        ".nsh",
        ".pif",
        ".ps1",
        ".scr",
        ".sct",
        ".shb",
        ".sys",
        ".vb",
        ".vbe",
        ".vbs",
        ".vhd",
        ".vxd",
        ".wsc",
        ".wsf",
        ".wsh",
        ".xll",
    ]
)
# Office formats that carry macros: the commonest malware carrier.
MACRO_EXTENSIONS = frozenset(
    [
        ".docm",
        ".dotm",
        ".xlsm",
        ".xltm",
        ".xlam",
        ".xla",
        ".pptm",
        ".potm",
        ".ppam",
        ".ppsm",
        ".sldm",
    ]
)
RISKY_TYPES = frozenset(
    {
        "application/x-msdownload",
        "application/x-msdos-program",
        "application/x-ms-installer",
        "application/x-msi",
        "application/x-sh",
        "application/javascript",
        "text/javascript",
        "application/java-archive",
        "application/x-iso9660-image",
        "application/vnd.ms-word.document.macroenabled.12",
        "application/vnd.ms-excel.sheet.macroenabled.12",
        "application/vnd.ms-powerpoint.presentation.macroenabled.12",
    }
)


def _extension(name: str) -> str:
    base = name.strip().lower().rstrip(". ")
    return base[base.rfind(".") :] if "." in base else ""


def risky_attachments(d: Draft) -> list[Issue]:
    """Executable, script, disk-image and macro-enabled Office attachments."""
    out = []
    for a in d.attachments:
        ext = _extension(a.filename)
        name = a.filename or "(no name)"
        if ext in RISKY_EXTENSIONS:
            out.append(
                Issue(
                    "attachments",
                    "risky_attachment",
                    "high",
                    f"{name}: {ext} files are blocked by Gmail and most filters",
                    25,
                    "Do not attach executables, scripts or disk images: link to a download",
                )
            )
        elif ext in MACRO_EXTENSIONS or a.content_type.lower() in RISKY_TYPES:
            what = f"{ext} (macro-enabled Office)" if ext in MACRO_EXTENSIONS else a.content_type
            out.append(
                Issue(
                    "attachments",
                    "risky_attachment",
                    "high",
                    f"{name}: {what} attachments are treated as malware carriers",
                    20,
                    "Send documents without macros (.docx, .xlsx, .pdf)",
                )
            )
    return out
