"""``github``, ``gitea`` and ``gitlab``: the forges' webhook events.

The event header (``X-GitHub-Event``, ``X-Gitea-Event``, ``X-Gitlab-Event``; for
GitLab the payload's ``object_kind`` first) chooses the mapping: push (and tag
pushes), pull/merge requests, issues, comments, releases, workflow runs/pipelines
and jobs, deployments. ``ping`` publishes nothing; so do runs that have not finished
(only their outcome is news) and release actions that repeat another one. Any other
event becomes a short generic notification naming the event, the repository and who
caused it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import (
    PayloadError,
    Result,
    Template,
    bullet_list,
    clip,
    event,
    first_line,
    get_text,
    lst,
    obj,
    tags,
    text,
)

ZERO_SHA = "0" * 40
#: pull request / issue actions worth the default priority; the rest are low
MAIN_ACTIONS = frozenset({"opened", "closed", "merged", "reopened", "ready_for_review",
                          "open", "close", "reopen", "merge", "created"})  # fmt: skip
#: run conclusions that need attention
FAILED = frozenset({"failure", "failed", "timed_out", "startup_failure", "action_required"})
#: a body quoting a pull request's or issue's text keeps this much of it
QUOTE_MAX = 1500


def _low(action: str) -> int | None:
    return None if action in MAIN_ACTIONS else 2


def _outcome_priority(conclusion: str) -> int:
    return 4 if conclusion in FAILED else 2 if conclusion == "success" else 3


def _ref_name(ref: str) -> tuple[str, str]:
    """``refs/heads/main`` → ("branch", "main"); ``refs/tags/v1`` → ("tag", "v1")."""
    if ref.startswith("refs/heads/"):
        return "branch", ref[len("refs/heads/") :]
    if ref.startswith("refs/tags/"):
        return "tag", ref[len("refs/tags/") :]
    return "ref", ref


def _commit_lines(commits: list[Any], where: str) -> list[str]:
    lines = []
    for i, commit in enumerate(commits[:10]):
        commit = obj(commit, f"{where}[{i}]")
        sha = get_text(commit, "id", f"{where}[{i}]")[:7]
        message = first_line(get_text(commit, "message", f"{where}[{i}]"))
        author = obj(commit.get("author"), f"{where}[{i}].author")
        name = get_text(author, "name", f"{where}[{i}].author")
        line = f"{sha} {clip(message, 100)}".strip()
        lines.append(f"{line} ({name})" if name else line)
    return lines


# -- GitHub and Gitea (Gitea's payloads follow GitHub's) -----------------------------------


def _gh_repo(p: Mapping[str, Any]) -> tuple[str, str | None, str]:
    repo = obj(p.get("repository"), "repository")
    full = get_text(repo, "full_name", "repository") or get_text(repo, "name", "repository")
    short = get_text(repo, "name", "repository")
    return full or "repository", repo.get("html_url"), short


def _gh_user(value: Any, where: str) -> str:
    user = obj(value, where)
    return get_text(user, "login", where) or get_text(user, "username", where)


def _gh_push(p: dict[str, Any], repo: str, who: str, family: str) -> dict[str, Any]:
    kind_, name = _ref_name(get_text(p, "ref", ""))
    pusher = obj(p.get("pusher"), "pusher")
    who = (get_text(pusher, "name", "pusher") or get_text(pusher, "login", "pusher")
           or get_text(pusher, "username", "pusher") or who)  # fmt: skip
    commits = lst(p.get("commits"), "commits")
    total = p.get("total_commits")
    count = total if isinstance(total, int) and not isinstance(total, bool) else len(commits)
    click = p.get("compare") or p.get("compare_url")
    if p.get("deleted") is True or get_text(p, "after", "") == ZERO_SHA:
        title = f"{repo}: {who} deleted {kind_} {name}"
        body = ""
    elif kind_ == "tag":
        title = f"{repo}: {who} pushed tag {name}"
        body = ""
    else:
        verb = "force-pushed" if p.get("forced") is True else "pushed"
        plural = "commit" if count == 1 else "commits"
        title = f"{repo}: {who} {verb} {count} {plural} to {name}"
        body = bullet_list(_commit_lines(commits, "commits"), count)
    if not isinstance(click, str) or not click.strip():
        head = obj(p.get("head_commit"), "head_commit")
        click = head.get("url")
    return event(title=title, body=body, tags=tags("push", family), click=click)


def _gh_pull(p: dict[str, Any], repo: str, who: str, family: str) -> dict[str, Any]:
    action = get_text(p, "action", "")
    pr = obj(p.get("pull_request"), "pull_request")
    number = text(pr.get("number") or p.get("number"), "pull_request.number")
    verb = "merged" if action == "closed" and pr.get("merged") is True else action
    verb = {"synchronize": "updated", "synchronized": "updated"}.get(verb, verb) or "updated"
    head = get_text(obj(pr.get("head"), "pull_request.head"), "ref", "pull_request.head")
    base = get_text(obj(pr.get("base"), "pull_request.base"), "ref", "pull_request.base")
    draft = " draft" if pr.get("draft") is True else ""
    line = f"{who} {verb.replace('_', ' ')}{draft} pull request #{number}"
    if head and base:
        line += f" ({head} → {base})"
    description = clip(get_text(pr, "body", "pull_request"), QUOTE_MAX)
    return event(
        title=f"{repo}: PR #{number} {verb.replace('_', ' ')}: {get_text(pr, 'title', 'pull_request')}",
        body=f"{line}\n\n{description}" if description else line,
        priority=_low("merged" if verb == "merged" else action),
        tags=tags("pull-request", verb, family),
        click=pr.get("html_url"),
    )


def _labels(items: Any, where: str, key: str = "name") -> list[str]:
    out = []
    for i, label in enumerate(lst(items, where)[:5]):
        if isinstance(label, dict):
            out.append(text(label.get(key) or label.get("title"), f"{where}[{i}].{key}"))
    return out


def _gh_issue(p: dict[str, Any], repo: str, who: str, family: str) -> dict[str, Any]:
    action = get_text(p, "action", "") or "updated"
    issue = obj(p.get("issue"), "issue")
    number = text(issue.get("number") or p.get("number"), "issue.number")
    line = f"{who} {action.replace('_', ' ')} issue #{number}"
    description = clip(get_text(issue, "body", "issue"), QUOTE_MAX)
    return event(
        title=f"{repo}: issue #{number} {action.replace('_', ' ')}: {get_text(issue, 'title', 'issue')}",
        body=f"{line}\n\n{description}" if description else line,
        priority=_low(action),
        tags=tags("issue", action, family, *_labels(issue.get("labels"), "issue.labels")),
        click=issue.get("html_url"),
    )


def _gh_comment(p: dict[str, Any], repo: str, who: str, family: str) -> dict[str, Any]:
    action = get_text(p, "action", "") or "created"
    comment = obj(p.get("comment"), "comment")
    issue = obj(p.get("issue") or p.get("pull_request"), "issue")
    number = text(issue.get("number"), "issue.number")
    is_pr = "pull_request" in issue or "pull_request" in p or p.get("is_pull") is True
    what = "PR" if is_pr else "issue"
    author = _gh_user(comment.get("user"), "comment.user") or who
    verb = "commented" if action == "created" else f"{action} a comment"
    return event(
        title=f"{repo}: {author} {verb} on {what} #{number}: {get_text(issue, 'title', 'issue')}",
        body=clip(get_text(comment, "body", "comment"), QUOTE_MAX),
        priority=_low(action),
        tags=tags("comment", family),
        click=comment.get("html_url") or issue.get("html_url"),
    )


def _gh_review(name: str, p: dict[str, Any], repo: str, who: str, family: str) -> dict[str, Any]:
    """A pull request review (GitHub's ``pull_request_review``, Gitea's
    ``pull_request_approved`` / ``_rejected`` / ``_comment``)."""
    pr = obj(p.get("pull_request"), "pull_request")
    review = obj(p.get("review"), "review")
    number = text(pr.get("number") or p.get("number"), "pull_request.number")
    state = get_text(review, "state", "review").lower()
    if name.endswith("_approved") or state == "approved":
        verb = "approved"
    elif name.endswith("_rejected") or state == "changes_requested":
        verb = "requested changes on"
    else:
        verb = "reviewed"
    author = _gh_user(review.get("user"), "review.user") or who
    body = get_text(review, "body", "review") or get_text(review, "content", "review")
    return event(
        title=f"{repo}: {author} {verb} PR #{number}: {get_text(pr, 'title', 'pull_request')}",
        body=clip(body, QUOTE_MAX) or f"{author} {verb} pull request #{number}",
        priority=None if verb != "reviewed" else 2,
        tags=tags("review", verb.split()[0], family),
        click=review.get("html_url") or pr.get("html_url"),
    )


def _gh_release(p: dict[str, Any], repo: str, who: str, family: str) -> dict[str, Any] | None:
    action = get_text(p, "action", "")
    # GitHub sends created + published (+ released) for one release: notify once
    if action not in ("published", "deleted", "updated"):
        return None
    release = obj(p.get("release"), "release")
    tag = get_text(release, "tag_name", "release")
    name = get_text(release, "name", "release") or tag
    pre = release.get("prerelease") is True
    title = f"{repo}: {'pre-release' if pre else 'release'} {name} {action or 'published'}"
    return event(
        title=title,
        body=clip(get_text(release, "body", "release"), QUOTE_MAX) or f"{who} {action} {tag}",
        priority=None if action == "published" else 2,
        tags=tags("release", "prerelease" if pre else None, family),
        click=release.get("html_url"),
    )


def _gh_run(p: dict[str, Any], repo: str, who: str, family: str, key: str) -> dict[str, Any] | None:
    if get_text(p, "action", "") != "completed":
        return None
    run = obj(p.get(key), key)
    conclusion = get_text(run, "conclusion", key) or "completed"
    name = get_text(run, "name", key) or key.replace("_", " ")
    number = run.get("run_number") if key == "workflow_run" else run.get("run_id")
    branch = get_text(run, "head_branch", key)
    title = f"{repo}: {name}"
    if isinstance(number, int) and not isinstance(number, bool):
        title += f" #{number}"
    title += f" {conclusion.replace('_', ' ')}"
    if branch:
        title += f" on {branch}"
    actor = _gh_user(run.get("actor") or run.get("triggering_actor"), f"{key}.actor") or who
    subject = get_text(run, "display_title", key)
    if not subject:
        head = obj(run.get("head_commit"), f"{key}.head_commit")
        subject = first_line(get_text(head, "message", f"{key}.head_commit"))
    body = f"{subject}\n\nTriggered by {actor}" if subject else f"Triggered by {actor}"
    return event(
        title=title,
        body=body,
        priority=_outcome_priority(conclusion),
        tags=tags("workflow", conclusion, family),
        click=run.get("html_url"),
    )


def _generic(event_name: str, p: dict[str, Any], repo: str, who: str, repo_url: Any,
             family: str) -> dict[str, Any]:  # fmt: skip
    action = p.get("action") if isinstance(p.get("action"), str) else ""
    what = event_name.replace("_", " ")
    title = f"{repo}: {what} {action}".strip() if repo else f"{what} {action}".strip()
    extra = ""
    ref = p.get("ref")
    if isinstance(ref, str) and ref:
        extra = f" ({get_text(p, 'ref_type', '') or 'ref'} {ref})".replace("  ", " ")
    return event(
        title=title + extra,
        body=f"{who} caused a {what} event" if who else f"a {what} event",
        priority=2,
        tags=tags(event_name, family),
        click=repo_url,
    )


def _hub(family: str, header_names: tuple[str, ...]) -> Any:
    def render(payload: Any, headers: Mapping[str, str], options: Mapping[str, Any]) -> Result:
        name = next((headers[h] for h in header_names if headers.get(h)), "").strip().lower()
        p = obj(payload, "payload")
        if not name:
            raise PayloadError(
                f"the {header_names[0]} header names the event; it is missing", header_names[0]
            )
        if name == "ping":
            return Result(ignored="ping")
        repo, repo_url, _ = _gh_repo(p)
        who = _gh_user(p.get("sender"), "sender")
        ev: dict[str, Any] | None
        if name == "push":
            ev = _gh_push(p, repo, who, family)
        elif name == "pull_request":
            ev = _gh_pull(p, repo, who, family)
        elif name == "issues":
            ev = _gh_issue(p, repo, who, family)
        elif name in ("issue_comment", "pull_request_comment"):
            ev = _gh_comment(p, repo, who, family)
        elif name in ("pull_request_review", "pull_request_approved", "pull_request_rejected"):
            ev = _gh_review(name, p, repo, who, family)
        elif name == "release":
            ev = _gh_release(p, repo, who, family)
            if ev is None:
                return Result(ignored=f"release {get_text(p, 'action', '')}: notified once, "
                              "when published")  # fmt: skip
        elif name in ("workflow_run", "workflow_job"):
            ev = _gh_run(p, repo, who, family, name)
            if ev is None:
                return Result(ignored=f"{name} {get_text(p, 'action', '')}: only completed "
                              "runs notify")  # fmt: skip
        else:
            ev = _generic(name, p, repo, who, repo_url, family)
        return Result([ev])

    return render


def _hub_sample(header: str) -> Any:
    def sample() -> tuple[Any, dict[str, str]]:
        return {
            "ref": "refs/heads/main",
            "before": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
            "after": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
            "compare": "https://git.example.com/octo/app/compare/6113728f27ae...0d1a26e67d8f",
            "compare_url": "https://git.example.com/octo/app/compare/6113728f27ae...0d1a26e67d8f",
            "commits": [
                {"id": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c", "message": "Fix the build\n\nDetails.",
                 "url": "https://git.example.com/octo/app/commit/0d1a26e6",
                 "author": {"name": "Mona", "email": "mona@example.com"}},
            ],
            "repository": {"name": "app", "full_name": "octo/app",
                           "html_url": "https://git.example.com/octo/app"},
            "pusher": {"name": "mona", "login": "mona"},
            "sender": {"login": "mona"},
        }, {header: "push"}  # fmt: skip

    return sample


# -- GitLab ------------------------------------------------------------------------------

#: X-Gitlab-Event → object_kind, for payloads that lack object_kind
_GITLAB_HEADERS = {
    "push hook": "push", "tag push hook": "tag_push", "issue hook": "issue",
    "confidential issue hook": "issue", "note hook": "note", "confidential note hook": "note",
    "merge request hook": "merge_request", "pipeline hook": "pipeline", "job hook": "build",
    "release hook": "release", "deployment hook": "deployment", "wiki page hook": "wiki_page",
}  # fmt: skip
#: pipeline and job statuses that are outcomes (the rest: still running)
GITLAB_DONE = frozenset({"success", "failed", "canceled", "skipped"})
_GL_VERBS = {"open": "opened", "close": "closed", "reopen": "reopened", "update": "updated",
             "merge": "merged", "approved": "approved", "approval": "approved",
             "unapproved": "unapproved", "unapproval": "unapproved", "create": "created",
             "delete": "deleted"}  # fmt: skip


def _gl_project(p: Mapping[str, Any]) -> tuple[str, str]:
    project = obj(p.get("project"), "project")
    name = get_text(project, "path_with_namespace", "project") or get_text(
        project, "name", "project"
    )
    return name or "project", get_text(project, "web_url", "project")


def _gl_user(p: Mapping[str, Any]) -> str:
    user = obj(p.get("user"), "user")
    return (get_text(user, "username", "user") or get_text(user, "name", "user")
            or get_text(p, "user_username", "") or get_text(p, "user_name", ""))  # fmt: skip


def _gl_push(p: dict[str, Any], project: str, web: str, who: str, tag_push: bool) -> dict[str, Any]:
    _, name = _ref_name(get_text(p, "ref", ""))
    before, after = get_text(p, "before", ""), get_text(p, "after", "")
    commits = lst(p.get("commits"), "commits")
    total = p.get("total_commits_count")
    count = total if isinstance(total, int) and not isinstance(total, bool) else len(commits)
    click: str | None = f"{web}/-/commits/{name}" if web else None
    if after == ZERO_SHA:
        title, body = f"{project}: {who} deleted {'tag' if tag_push else 'branch'} {name}", ""
    elif tag_push:
        title, body = f"{project}: {who} pushed tag {name}", get_text(p, "message", "")
        click = f"{web}/-/tags/{name}" if web else None
    else:
        plural = "commit" if count == 1 else "commits"
        title = f"{project}: {who} pushed {count} {plural} to {name}"
        body = bullet_list(_commit_lines(commits, "commits"), count)
        if web and before and before != ZERO_SHA:
            click = f"{web}/-/compare/{before}...{after}"
    return event(title=title, body=body, tags=tags("tag" if tag_push else "push", "gitlab"),
                 click=click)  # fmt: skip


def _gl_item(p: dict[str, Any], project: str, who: str, kind_: str) -> dict[str, Any]:
    attrs = obj(p.get("object_attributes"), "object_attributes")
    action = get_text(attrs, "action", "object_attributes") or "updated"
    verb = _GL_VERBS.get(action, action)
    iid = text(attrs.get("iid"), "object_attributes.iid")
    sign, what = ("!", "MR") if kind_ == "merge_request" else ("#", "issue")
    line = f"{who} {verb} {'merge request' if what == 'MR' else 'issue'} {sign}{iid}"
    if kind_ == "merge_request":
        src = get_text(attrs, "source_branch", "object_attributes")
        dst = get_text(attrs, "target_branch", "object_attributes")
        if src and dst:
            line += f" ({src} → {dst})"
    description = clip(get_text(attrs, "description", "object_attributes"), QUOTE_MAX)
    title = get_text(attrs, "title", "object_attributes")
    return event(
        title=f"{project}: {what} {sign}{iid} {verb}: {title}",
        body=f"{line}\n\n{description}" if description else line,
        priority=_low(action),
        tags=tags(
            "merge-request" if what == "MR" else "issue",
            verb,
            "gitlab",
            *_labels(p.get("labels"), "labels", "title"),
        ),  # fmt: skip
        click=attrs.get("url"),
    )


def _gl_note(p: dict[str, Any], project: str, who: str) -> dict[str, Any]:
    attrs = obj(p.get("object_attributes"), "object_attributes")
    noteable = get_text(attrs, "noteable_type", "object_attributes")
    target, label = "", noteable or "item"
    if noteable == "MergeRequest":
        mr = obj(p.get("merge_request"), "merge_request")
        target = f" !{text(mr.get('iid'), 'merge_request.iid')}: {get_text(mr, 'title', 'merge_request')}"
        label = "MR"
    elif noteable == "Issue":
        issue = obj(p.get("issue"), "issue")
        target = f" #{text(issue.get('iid'), 'issue.iid')}: {get_text(issue, 'title', 'issue')}"
        label = "issue"
    elif noteable == "Commit":
        commit = obj(p.get("commit"), "commit")
        target, label = f" {get_text(commit, 'id', 'commit')[:8]}", "commit"
    return event(
        title=f"{project}: {who} commented on {label}{target}",
        body=clip(get_text(attrs, "note", "object_attributes"), QUOTE_MAX),
        tags=tags("comment", "gitlab"),
        click=attrs.get("url"),
    )


def _gl_pipeline(p: dict[str, Any], project: str, web: str, who: str) -> dict[str, Any] | None:
    attrs = obj(p.get("object_attributes"), "object_attributes")
    status = get_text(attrs, "status", "object_attributes")
    if status not in GITLAB_DONE:
        return None
    pid = text(attrs.get("id"), "object_attributes.id")
    ref = get_text(attrs, "ref", "object_attributes")
    commit = obj(p.get("commit"), "commit")
    subject = first_line(
        get_text(commit, "title", "commit") or get_text(commit, "message", "commit")
    )
    failed = []
    for i, build in enumerate(lst(p.get("builds"), "builds")):
        build = obj(build, f"builds[{i}]")
        if get_text(build, "status", f"builds[{i}]") == "failed":
            failed.append(
                f"{get_text(build, 'stage', f'builds[{i}]')}: {get_text(build, 'name', f'builds[{i}]')}"
            )
    lines = [subject] if subject else []
    if failed:
        lines.append("Failed jobs:\n" + bullet_list(failed))
    lines.append(f"Triggered by {who}" if who else "")
    link = attrs.get("url") or (f"{web}/-/pipelines/{pid}" if web and pid else None)
    status_word = "failed" if status == "failed" else status
    return event(
        title=f"{project}: pipeline #{pid} {status_word}" + (f" on {ref}" if ref else ""),
        body="\n\n".join(line for line in lines if line),
        priority=_outcome_priority(status),
        tags=tags("pipeline", status, "gitlab"),
        click=link,
    )


def _gl_job(p: dict[str, Any], project: str, web: str) -> dict[str, Any] | None:
    status = get_text(p, "build_status", "")
    if status not in GITLAB_DONE:
        return None
    job_id = text(p.get("build_id"), "build_id")
    name = get_text(p, "build_name", "")
    ref = get_text(p, "ref", "")
    return event(
        title=f"{project}: job {name} {status}" + (f" on {ref}" if ref else ""),
        body=f"Stage {get_text(p, 'build_stage', '')}".strip()
        + (
            f"\n\nReason: {get_text(p, 'build_failure_reason', '')}"
            if get_text(p, "build_failure_reason", "")
            else ""
        ),  # fmt: skip
        priority=_outcome_priority(status),
        tags=tags("job", status, "gitlab"),
        click=f"{web}/-/jobs/{job_id}" if web and job_id else None,
    )


def _gl_release(p: dict[str, Any], project: str) -> dict[str, Any]:
    action = get_text(p, "action", "") or "create"
    verb = _GL_VERBS.get(action, action)
    name = get_text(p, "name", "") or get_text(p, "tag", "")
    return event(
        title=f"{project}: release {name} {verb}",
        body=clip(get_text(p, "description", ""), QUOTE_MAX) or f"tag {get_text(p, 'tag', '')}",
        priority=2 if action == "delete" else None,
        tags=tags("release", "gitlab"),
        click=p.get("url"),
    )


def _gl_deployment(p: dict[str, Any], project: str, who: str) -> dict[str, Any] | None:
    status = get_text(p, "status", "")
    if status in ("created", "running"):
        return None
    env = get_text(p, "environment", "")
    return event(
        title=f"{project}: deployment to {env or 'an environment'} {status}",
        body=f"{who} deployed {get_text(p, 'ref', '')} ({get_text(p, 'short_sha', '')})".strip(),
        priority=_outcome_priority(status),
        tags=tags("deployment", status, "gitlab"),
        click=p.get("environment_external_url") or p.get("deployable_url"),
    )


def render_gitlab(payload: Any, headers: Mapping[str, str], options: Mapping[str, Any]) -> Result:
    p = obj(payload, "payload")
    kind_ = get_text(p, "object_kind", "") or get_text(p, "event_name", "")
    header = headers.get("x-gitlab-event", "").strip().lower()
    if not kind_:
        kind_ = _GITLAB_HEADERS.get(header, "")
    if not kind_:
        raise PayloadError("a GitLab payload has an 'object_kind' (or an X-Gitlab-Event "
                           "header naming the event)", "object_kind")  # fmt: skip
    project, web = _gl_project(p)
    who = _gl_user(p)
    ev: dict[str, Any] | None
    if kind_ in ("push", "tag_push"):
        ev = _gl_push(p, project, web, who, kind_ == "tag_push")
    elif kind_ in ("merge_request", "issue"):
        ev = _gl_item(p, project, who, kind_)
    elif kind_ == "note":
        ev = _gl_note(p, project, who)
    elif kind_ == "pipeline":
        ev = _gl_pipeline(p, project, web, who)
    elif kind_ == "build":
        ev = _gl_job(p, project, web)
    elif kind_ == "release":
        ev = _gl_release(p, project)
    elif kind_ == "deployment":
        ev = _gl_deployment(p, project, who)
    else:
        ev = event(
            title=f"{project}: {kind_.replace('_', ' ')}",
            body=f"{who} caused a {kind_.replace('_', ' ')} event" if who else "",
            priority=2,
            tags=tags(kind_, "gitlab"),
            click=web,
        )
    if ev is None:
        return Result(ignored=f"{kind_.replace('_', ' ')} not finished: only outcomes notify")
    return Result([ev])


def _gitlab_sample() -> tuple[Any, dict[str, str]]:
    return {
        "object_kind": "pipeline",
        "object_attributes": {"id": 31, "iid": 3, "ref": "main", "status": "failed",
                              "url": "https://gitlab.example.com/group/app/-/pipelines/31"},
        "user": {"name": "Administrator", "username": "root"},
        "project": {"name": "app", "path_with_namespace": "group/app",
                    "web_url": "https://gitlab.example.com/group/app"},
        "commit": {"id": "bcbb5ec396a2c0f828686f14fac9b80b780504f2", "title": "Update Gemfile",
                   "message": "Update Gemfile\n"},
        "builds": [{"id": 380, "stage": "test", "name": "rspec", "status": "failed"}],
    }, {"x-gitlab-event": "Pipeline Hook"}  # fmt: skip


GITHUB = Template("github", _hub("github", ("x-github-event",)), _hub_sample("x-github-event"),
                  form_payload=True)  # fmt: skip
GITEA = Template(
    "gitea", _hub("gitea", ("x-gitea-event", "x-gogs-event", "x-github-event")),
    _hub_sample("x-gitea-event"), form_payload=True,
)  # fmt: skip
GITLAB = Template("gitlab", render_gitlab, _gitlab_sample)
