"""The red team's findings (issue "jobs run as their owner"), replayed: each finding's attack is one or more
regression tests; this runs them all in one pytest process and prints one table (finding, what was tried,
tests, passed), so "0 succeed" is a figure measured in the run, not a claim.

    sudo .venv/bin/python bench/redteam.py [--markdown]

Root is needed: the attacks run as real OS accounts (alice, bob, e2e-jobs), as a root engine runs jobs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

UNIT, INTEG = "tests/unit/", "tests/integration/"
FINDINGS: list[tuple[str, str, list[str]]] = [
    ("1 engine credential in a job", "a job reads E2E_REDIS_URL from its environment, the stack file, an engine "
     "process's environ, speaks raw RESP to Redis to set admin on a user",
     [INTEG + "test_cli_stack.py::test_embedded_stack_end_to_end_and_state_survives_a_restart",
      INTEG + "test_identity.py::test_every_process_and_folder_of_a_job_is_its_owners",
      INTEG + "test_identity.py::test_alices_job_reaches_nothing_of_bobs_or_of_the_engines",
      INTEG + "test_redis_acl.py::test_no_credential_and_the_admin_without_its_password_are_refused",
      INTEG + "test_redis_acl.py::test_the_worker_role_cannot_read_tokens_or_make_anyone_admin"]),
    ("2 edit names other files", "edit solver.inputs to another user's upload and stack.json, then rerun",
     [UNIT + "test_redteam_a.py::test_an_edit_may_not_name_paths_outside_the_callers_uploads",
      UNIT + "test_redteam_a.py::test_an_admins_edit_is_checked_against_the_owners_uploads",
      INTEG + "api/test_redteam_a.py::test_a_job_cannot_read_through_its_log_nor_edit_its_way_to_other_files"]),
    ("3 log symlink", "a job swaps its log (or a folder above it) for a symlink to /proc/self/cmdline, stack.json, "
     "a FIFO; reads it through /logs and the log stream",
     [UNIT + "test_redteam_a.py::test_a_log_swapped_for_a_symlink_is_refused_not_followed",
      UNIT + "test_redteam_a.py::test_a_symlinked_folder_above_the_log_is_refused",
      UNIT + "test_redteam_a.py::test_a_log_swapped_for_a_fifo_is_refused_at_once",
      UNIT + "test_identity.py::test_reads_below_the_state_folder_refuse_symlinks_and_fifos",
      UNIT + "test_acting_as.py::test_a_restart_never_reads_or_rewrites_a_root_file_the_job_linked_in"]),
    ("4 stream after revoke", "keep an /events stream open after `e2e admin revoke`",
     [INTEG + "api/test_redteam_b.py::test_revoking_a_token_ends_its_open_event_stream_within_5s",
      UNIT + "test_redteam_b.py::test_desktop_waits_are_capped_per_user_and_end_when_the_token_is_revoked"]),
    ("5 YAML alias bomb", "post a few hundred bytes of nested aliases to /ui/submit",
     [UNIT + "test_redteam_a.py::test_a_yaml_alias_bomb_gets_a_short_refusal_fast",
      UNIT + "test_redteam_a.py::test_aliases_are_refused_in_spec_files_and_edit_values",
      UNIT + "test_redteam_a.py::test_a_long_value_in_an_error_message_is_cut"]),
    ("6 decompression bombs", "upload 199 KiB that unpacks to 200 MiB; lie in tar headers; gzip bomb in a case",
     [UNIT + "test_api_uploads.py::test_a_bomb_is_refused_on_its_declared_size_and_leaves_nothing",
      UNIT + "test_api_uploads.py::test_bytes_written_are_counted_whatever_the_header_said",
      UNIT + "test_openfoam.py::test_a_gzip_bomb_in_a_case_fails_naming_the_file_and_leaves_no_partial_file",
      INTEG + "api/test_uploads_quota.py::test_bomb_quota_listing_and_deletion"]),
    ("7 readable engine files", "read the AOF, stack.json, another job's folder, uploads, results",
     [INTEG + "test_cli_stack.py::test_embedded_stack_end_to_end_and_state_survives_a_restart",
      UNIT + "test_acting_as.py::test_an_upload_belongs_to_its_uploaders_os_account",
      UNIT + "test_identity.py::test_prepare_node_gives_the_job_folder_to_the_account_and_lets_others_only_pass"]),
    ("8 forged X-Forwarded-For", "claim another address from loopback to pass the desktop CIDR rules and audit",
     [INTEG + "api/test_redteam_b.py::test_a_forged_forwarded_for_from_loopback_is_not_believed",
      UNIT + "test_redteam_b.py::test_serve_believes_forwarded_headers_only_from_the_configured_proxies"]),
    ("9 swept secret in clear", "sweep over a licence secret, read sweep_values",
     [UNIT + "test_redteam_a.py::test_a_swept_licence_secret_is_masked_everywhere_but_the_run",
      UNIT + "test_redteam_a.py::test_a_swept_secret_that_fails_validation_is_not_quoted"]),
    ("10 the rest", "cross-site login/logout; token on the browser's argv; path-existence oracle (~bob); "
     "streams and desktop waits without a cap; compose Redis open to the nodes, key everywhere",
     [INTEG + "api/test_redteam_b.py::test_cross_site_login_and_logout_are_refused_same_origin_forms_work",
      UNIT + "test_redteam_b.py::test_desktop_open_puts_no_secret_on_any_command_line",
      UNIT + "test_redteam_a.py::test_paths_outside_the_uploads_get_one_answer_whether_they_exist_or_not",
      INTEG + "api/test_redteam_b.py::test_streams_beyond_the_users_cap_get_429_and_another_user_is_unaffected",
      UNIT + "test_compose.py::test_redis_requires_a_login_and_each_service_has_its_own_role",
      UNIT + "test_compose.py::test_redis_is_on_the_engine_network_only_and_the_nodes_cannot_reach_it",
      UNIT + "test_compose.py::test_the_engines_private_key_is_mounted_into_the_worker_only"]),
]


def outcomes(report: Path) -> dict[str, str]:
    """node id -> passed / failed / skipped, from pytest's JUnit XML (a test passes when all its cases do)."""
    found = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        path = case.get("classname", "").replace(".", "/")
        node = f"{path}.py::{case.get('name', '').split('[')[0]}"  # every parameter case counts for its test
        kind = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                kind = "failed"
            elif child.tag == "skipped":
                kind = "skipped"
        if found.get(node, "passed") == "passed":
            found[node] = kind
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    args = parser.parse_args()
    nodes = sorted({n for _, _, tests in FINDINGS for n in tests})
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.xml"
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}",
                        *nodes], cwd=ROOT, env={**os.environ, "CI": "true"})
        took = time.monotonic() - started
        seen = outcomes(report)
    rows, held = [], 0
    for finding, tried, tests in FINDINGS:
        passed = sum(seen.get(t) == "passed" for t in tests)
        held += passed == len(tests)
        rows.append((finding, tried, len(tests), passed,
                     "closed" if passed == len(tests) else "OPEN (a test failed or did not run)"))
    if args.markdown:
        print("| finding | what was tried | tests | passed | result |\n|---|---|---|---|---|")
        for row in rows:
            print("| " + " | ".join(map(str, row)) + " |")
    else:
        for finding, _tried, count, passed, verdict in rows:
            print(f"{finding:30s} {passed}/{count} tests  {verdict}")
    print(f"\n{len(FINDINGS) - held} of {len(FINDINGS)} findings still succeed ({took:.0f} s, "
          f"{sum(v == 'passed' for v in seen.values())}/{len(nodes)} tests passed)")
    return 0 if held == len(FINDINGS) else 1


if __name__ == "__main__":
    sys.exit(main())
