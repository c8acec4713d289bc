"""Story: an operator checks the DNS of the sending domains (DKIM, SPF, DMARC, MX)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from conftest import build_settings
from fakes.dns import DnsServer
from mailgate.delivery.dkim import generate_key
from mailgate.domains_check import check_domains


def test_domains_check_reports_what_is_right_and_what_to_fix(tmp_path: Path) -> None:
    good_pem, good_txt = generate_key("ed25519")
    other_pem, other_txt = generate_key("ed25519")
    (tmp_path / "good.pem").write_bytes(good_pem)
    (tmp_path / "other.pem").write_bytes(other_pem)
    with DnsServer() as d:
        d.add("s1._domainkey.example.com", "TXT", good_txt)
        d.add("example.com", "TXT", "v=spf1 ip4:192.0.2.1 ~all")
        d.add("_dmarc.example.com", "TXT", "v=DMARC1; p=reject")
        d.add("example.com", "MX", "10 mx.example.com.")
        d.add("s2._domainkey.example.org", "TXT", good_txt)  # not the key we sign with
        d.add("example.org", "TXT", "v=spf1 -all")
        d.add("example.org", "TXT", "v=spf1 include:x ~all")
        settings = build_settings(
            tmp_path,
            domains=[
                {
                    "name": "example.com",
                    "dkim_selector": "s1",
                    "dkim_key": str(tmp_path / "good.pem"),
                },
                {
                    "name": "example.org",
                    "dkim_selector": "s2",
                    "dkim_key": str(tmp_path / "other.pem"),
                },
                {"name": "example.net"},
            ],
            dns={"nameservers": [d.nameserver]},
        )
        rows = asyncio.run(check_domains(settings))
    by = {(r.domain, r.what): r for r in rows}
    assert all(by[("example.com", w)].ok for w in ("dkim s1", "spf", "dmarc", "mx"))
    assert "10 mx.example.com." in by[("example.com", "mx")].detail
    org_dkim = by[("example.org", "dkim s2")]
    assert (
        not org_dkim.ok and "another key" in org_dkim.detail and other_txt[-20:] in org_dkim.detail
    )
    assert (
        not by[("example.org", "spf")].ok and "more than one" in by[("example.org", "spf")].detail
    )
    assert (
        not by[("example.org", "dmarc")].ok
        and "_dmarc.example.org" in by[("example.org", "dmarc")].detail
    )
    assert (
        not by[("example.net", "dkim")].ok and "dkim keygen" in by[("example.net", "dkim")].detail
    )
    assert not by[("example.net", "mx")].ok


def test_domains_check_command_exit_codes(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from mailgate.cli import main

    pem, txt = generate_key("ed25519")
    (tmp_path / "k.pem").write_bytes(pem)
    with DnsServer() as d:
        cfg = tmp_path / "relay.toml"
        cfg.write_text(
            f'[server]\ndata_dir = "{tmp_path}/data"\n[dns]\nnameservers = ["{d.nameserver}"]\n'
            f'[[domains]]\nname = "example.com"\ndkim_selector = "s1"\n'
            f'dkim_key = "{tmp_path}/k.pem"\n'
            f'[[providers]]\nname = "c"\nkind = "maildir"\npath = "{tmp_path}/m"\n'
        )
        runner = CliRunner()
        result = runner.invoke(main, ["domains", "check", "--config", str(cfg)])
        assert result.exit_code == 1
        assert "example.com" in result.output and "FIX" in result.output
        d.add("s1._domainkey.example.com", "TXT", txt)
        d.add("example.com", "TXT", "v=spf1 -all")
        d.add("_dmarc.example.com", "TXT", "v=DMARC1; p=none")
        d.add("example.com", "MX", "10 mx.example.com.")
        result = runner.invoke(main, ["domains", "check", "--config", str(cfg)])
        assert result.exit_code == 0, result.output
        assert "FIX" not in result.output
