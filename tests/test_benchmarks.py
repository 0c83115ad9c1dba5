"""The campaign benchmark's documented commands find the records they report: a default or a setting added
later changes the records key, and a command that no longer finds its records recomputes hours of rounds."""

import re
import shlex

import pytest

from benchmarks import campaign


def documented_reports() -> list[str]:
    """The commands of ``benchmarks.campaign``'s docstring that write a numbered report (``campaign-v<N>``)."""
    lines = re.sub(r"\\\n\s*", "", campaign.__doc__).splitlines()
    commands = [line.split("#")[0].split() for line in lines if line.strip().startswith("python -m benchmarks.campaign")]
    parsed = [(words, campaign.parse_args(words[3:])) for words in commands]
    return [" ".join(words) for words, args in parsed
            if not args.no_report and re.fullmatch(r"campaign-v\d+", args.name)]


def test_the_docstring_names_a_command_for_every_numbered_campaign_since_v2() -> None:
    names = {campaign.parse_args(shlex.split(command)[3:]).name for command in documented_reports()}
    today = int(campaign.parse_args([]).name.removeprefix("campaign-v"))  # the plain command's report
    assert names == {f"campaign-v{n}" for n in range(2, today + 1)}


@pytest.mark.parametrize("command", documented_reports())
def test_a_documented_campaign_command_finds_its_committed_records(command: str) -> None:
    args = campaign.parse_args(shlex.split(command)[3:])
    for system in args.systems:
        key = campaign.run_key(campaign.system_config(campaign.SYSTEMS[system], campaign.run_overrides(args)))
        records = campaign.RECORDS / f"run-{key}"
        assert any((records / f"{arm}.jsonl.gz").exists() for arm in args.arms), (system, records)
