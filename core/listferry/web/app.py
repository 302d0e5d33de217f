"""The console: server-rendered pages for people, a JSON API for scripts.

Pages work without JavaScript. Reading needs a login (any role); replaying a run, forcing
it past the shrink guard and downloading an archived file need the ``admin`` role, a
confirmation, and the session's CSRF token; each such action is written to the audit log.
The API answers with the shapes of the CLI's ``--json`` output and is described at
``/api/openapi.json``; scripts authenticate with ``Authorization: Bearer TOKEN``
(``listferry operator token NAME``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import secrets
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, quote

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParameter
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from listferry import __version__
from listferry.config import Tenant
from listferry.config.passwords import hash_password, needs_rehash, verify_password
from listferry.errors import ConfigError, ListferryError
from listferry.runs import RunRecord
from listferry.serve.blocks import BlockBook
from listferry.serve.log import Budget, shown
from listferry.web import schemas, views
from listferry.web.security import COOKIE, same
from listferry.web.site import HERE, Caller, Site

log = logging.getLogger("listferry")

#: How long a replay or forced sync started from the console may take.
ACTION_SECONDS = 3600
#: The fields of a run as ``--json`` prints it.
RUN_FIELDS = frozenset(f.name for f in dataclasses.fields(RunRecord))
#: The largest form body the console reads.
MAX_FORM = 64 * 1024
LOGIN_COOKIE = "listferry_login"
#: Refused logins are logged, within this budget per address and result.
LOGIN_LINES = Budget(lines=20, seconds=60)
#: A hash no password matches, checked for an unknown account so that the answer takes
#: as long as for a known one.
_NOBODY = hash_password(secrets.token_urlsafe(16))
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


#: A run's number: SQLite's integers end at 2**63 - 1.
RunId = Annotated[int, PathParameter(ge=1, le=2**62)]
#: A tenant's name as the config allows it.
Name = Annotated[str, PathParameter(max_length=63)]


class LoginNeeded(Exception):
    """A page asked for without a valid session: off to the login page."""


def create_app(config_path: Path) -> FastAPI:
    """The console's ASGI application for the config at ``config_path``."""
    site = Site(config_path)
    api = FastAPI(
        title="listferry console",
        version=__version__,
        description="The operator's console of listferry: tenants, runs, the digest.",
        openapi_url="/api/openapi.json",
        responses={
            401: {"model": schemas.Error, "description": "no login, or a bad API token"},
            403: {"model": schemas.Error, "description": "a viewer, or no CSRF token"},
            404: {"model": schemas.Error, "description": "no such tenant or run"},
            409: {"model": schemas.Error, "description": "refused"},
        },
        docs_url=None,
        redoc_url=None,
    )
    api.state.site = site

    @api.middleware("http")
    async def headers(request: Request, call_next: Any) -> Response:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_FORM):
            return _error(request, 413, f"a request body may have at most {MAX_FORM} bytes")
        if "transfer-encoding" in request.headers:  # a body of no stated size: refused
            return _error(request, 411, "send the body with a Content-Length")
        try:
            response = await call_next(request)
        except Exception as exc:  # one line in the log, and one for the reader
            log.error(
                "console: %s %s failed: %s: %s",
                request.method,
                request.url.path,
                type(exc).__name__,
                exc,
            )
            response = _error(request, 500, f"internal error: {type(exc).__name__}")
        for name, value in _HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @api.exception_handler(LoginNeeded)
    async def login_needed(request: Request, exc: LoginNeeded) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target)}", status_code=303)

    @api.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return _error(request, exc.status_code, str(exc.detail), exc.headers)

    @api.exception_handler(RequestValidationError)
    async def bad_parameter(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        parts = [str(part) for part in first.get("loc", ()) if part not in ("query", "path")]
        where = ".".join(parts)
        return _error(request, 422, f"{where or 'a parameter'}: {first.get('msg', 'not valid')}")

    @api.exception_handler(ConfigError)
    async def config_error(request: Request, exc: ConfigError) -> Response:
        # an unknown tenant asked for, or the config file as it is now does not check
        return _error(request, 404 if "no tenant" in str(exc) else 503, str(exc))

    @api.exception_handler(ListferryError)
    async def refused(request: Request, exc: ListferryError) -> Response:
        return _error(request, 409, str(exc))

    def _error(
        request: Request, status: int, message: str, extra: dict[str, str] | None = None
    ) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": message}, status, headers=extra)
        try:
            caller = _caller(request)
        except Exception:  # the console's database itself failed: no name in the header
            caller = None
        page = site.templates.get_template("error.html").render(
            **_common(request, caller), status=status, message=message
        )
        return HTMLResponse(page, status, headers=extra)

    # -- who asks ------------------------------------------------------------------------

    def _caller(request: Request) -> Caller | None:
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            operator = site.console.token_operator(auth[7:].strip())
            if operator is None:
                raise HTTPException(
                    401,
                    "that API token is not valid (revoked, or mistyped)",
                    {"WWW-Authenticate": "Bearer"},
                )
            return Caller(operator)
        session = site.sessions.read(request.cookies.get(COOKIE))
        if session is None:
            return None
        operator = site.console.operator(session.operator)
        if operator is None or operator.generation != session.generation:
            return None
        if site.console.session_ended(session.sid):
            return None
        return Caller(operator, session)

    def page_caller(request: Request) -> Caller:
        caller = _caller(request)
        if caller is None:
            raise LoginNeeded
        return caller

    def api_caller(request: Request) -> Caller:
        caller = _caller(request)
        if caller is None:
            raise HTTPException(
                401, "log in, or send Authorization: Bearer TOKEN", {"WWW-Authenticate": "Bearer"}
            )
        return caller

    def admin(caller: Caller) -> None:
        if not caller.admin:
            raise HTTPException(403, f"{caller.operator.name} is a viewer: this needs an admin")

    def csrf(caller: Caller, token: str | None) -> None:
        """A request made with the session cookie must show the session's CSRF token."""
        if caller.session is not None and not site.sessions.csrf_ok(caller.session, token):
            raise HTTPException(403, "the form's CSRF token is missing or wrong: reload the page")

    async def form(request: Request) -> dict[str, str]:
        body = b""
        try:
            async for chunk in request.stream():  # never more than MAX_FORM in memory
                body += chunk
                if len(body) > MAX_FORM:
                    raise HTTPException(413, f"a form may have at most {MAX_FORM} bytes")
        except ClientDisconnect:
            raise HTTPException(400, "the client went away in the middle of its form") from None
        try:
            fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=20)
        except (UnicodeDecodeError, ValueError):
            raise HTTPException(400, "the form is not URL-encoded UTF-8 text") from None
        return {key: values[-1] for key, values in fields.items()}

    async def admin_form(request: Request) -> tuple[Caller, dict[str, str]]:
        """A form that changes something: a logged-in admin's, with the session's CSRF
        token (checked before the role, so a forged form learns nothing)."""
        caller = page_caller(request)
        fields = await form(request)
        csrf(caller, fields.get("csrf"))
        admin(caller)
        return caller, fields

    def _common(request: Request, caller: Caller | None) -> dict[str, Any]:
        return {
            "caller": caller,
            "csrf": site.sessions.csrf(caller.session) if caller and caller.session else "",
            "path": request.url.path,
            "version": __version__,
        }

    def render(
        request: Request, caller: Caller | None, template: str, /, **values: Any
    ) -> HTMLResponse:
        page = site.templates.get_template(template).render(**_common(request, caller), **values)
        return HTMLResponse(page)

    def address(request: Request) -> str:
        return request.client.host if request.client else "-"

    # -- logging in ----------------------------------------------------------------------

    @api.get("/login", include_in_schema=False)
    def login_page(request: Request, next: str = "/") -> Response:
        return _login_form(request, _local(next), None, 200)

    def _login_form(request: Request, target: str, problem: str | None, status: int) -> Response:
        nonce = secrets.token_urlsafe(16)
        page = render(
            request,
            None,
            "login.html",
            next=target,
            token=site.sessions.login_token(nonce),
            problem=problem,
        )
        page.status_code = status
        page.set_cookie(
            LOGIN_COOKIE, nonce, max_age=3600, httponly=True, samesite="strict", path="/login"
        )
        return page

    @api.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        fields = await form(request)
        name, password = fields.get("name", "").strip()[:200], fields.get("password", "")
        target = _local(fields.get("next", "/"))
        nonce = request.cookies.get(LOGIN_COOKIE, "")
        if not nonce or not same(site.sessions.login_token(nonce), fields.get("token", "")):
            raise HTTPException(403, "the login form's token is missing or wrong: reload the page")
        where = address(request)
        wait, attempt = site.throttle.begin(where, name)
        if wait > 0:
            _refused_login(where, name, "throttled")
            minutes = max(1, round(wait / 60))
            raise HTTPException(
                429,
                f"too many failed logins: try again in {minutes} min",
                {"Retry-After": str(int(wait) + 1)},
            )
        checking = site.throttle.check(lambda: _check_password(name, password))
        if checking is None:
            _refused_login(where, name, "busy")
            raise HTTPException(503, "too many logins at once: try again in a moment")
        operator = await asyncio.wrap_future(checking)
        if operator is None:
            _refused_login(where, name, "refused")
            return _login_form(request, target, "wrong name or password", 401)
        site.throttle.succeeded(where, name, attempt)
        _, cookie = site.sessions.issue(operator.name, operator.generation)
        site.console.audit(operator.name, where, "login")
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            COOKIE,
            cookie,
            max_age=int(site.sessions.seconds),
            httponly=True,
            samesite="strict",
            secure=_secure(request),
            path="/",
        )
        response.delete_cookie(LOGIN_COOKIE, path="/login")
        return response

    def _refused_login(where: str, name: str, result: str) -> None:
        """One log line per refused login, at most 20 a minute per address and result."""
        suppressed = LOGIN_LINES.allow((where, result))
        if suppressed is not None:
            log.warning(
                "console: event=login operator=%s ip=%s result=%s%s",
                shown(name),
                shown(where),
                result,
                f" suppressed={suppressed}" if suppressed else "",
            )

    def _check_password(name: str, password: str) -> Any:
        stored = site.console.password_of(name)
        good = verify_password(password, stored or _NOBODY) and stored is not None
        if not good:
            return None
        if needs_rehash(stored):
            site.console.keep_rehashed(name, stored, hash_password(password))
        return site.console.operator(name)

    def _secure(request: Request) -> bool:
        return site.secure_cookies or request.url.scheme == "https"

    @api.post("/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        caller = page_caller(request)
        csrf(caller, (await form(request)).get("csrf"))
        if caller.session is not None:  # the cookie is dead even if it was copied
            site.console.end_session(caller.session.sid, caller.session.expires)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    # -- pages ---------------------------------------------------------------------------

    @api.get("/", include_in_schema=False)
    def overview_page(
        request: Request, state: str = "", q: str = "", page: int = Query(1, ge=1, le=100_000)
    ) -> Response:
        caller = page_caller(request)
        wanted = state if state in views.STATES else None
        every = site.rows()
        counts: dict[str, int] = {}
        for row in every:
            counts[row.state] = counts.get(row.state, 0) + 1
        shown = views.chosen(every, wanted, q.strip().lower()[:64])
        size = views.OVERVIEW_PAGE
        return render(
            request,
            caller,
            "overview.html",
            rows=shown[(page - 1) * size : page * size],
            total=len(shown),
            page=page,
            more=len(shown) > page * size,
            state=wanted or "",
            q=q[:64],
            states=views.STATES,
            counts=counts,
            spark=views.spark_points,
        )

    @api.get("/tenants/{name}", include_in_schema=False)
    def tenant_page(
        request: Request,
        name: Name,
        page: int = Query(1, ge=1, le=100_000),
        changed: int = Query(-1, ge=-1, le=100),
    ) -> Response:
        caller = page_caller(request)
        from listferry.ops.history import run_history

        config = site.config
        tenant = config.tenant(name)
        size = site.page_size
        history = run_history(config, tenant, size + 1, (page - 1) * size)
        found = site.row(name)
        status = found.status if found else None
        chart = views.changes(run_history(config, tenant, 200))
        weeks = views.engagement(tenant) if config.cluster is None else []
        return render(
            request,
            caller,
            "tenant.html",
            tenant=tenant,
            status=status,
            runs=history[:size],
            page=page,
            more=len(history) > size,
            chart=chart,
            spark=views.spark_points,
            weeks=weeks,
            changed=changed,
            settings=views.settings_shown(tenant),
        )

    @api.get("/tenants/{name}/runs/{run_id}", include_in_schema=False)
    def run_page(request: Request, name: Name, run_id: RunId) -> Response:
        caller = page_caller(request)
        run = _run(name, run_id)
        in_cluster = site.config.cluster is not None
        archived = bool(run.archive) and not in_cluster and Path(run.archive).is_file()
        replayable = archived or (bool(run.archive) and in_cluster)
        held = run.status == "voided" and not run.archive and "--force" in (run.hint or "")
        return render(
            request,
            caller,
            "run.html",
            run=run,
            archived=archived,
            replayable=replayable,
            held=held,
        )

    @api.get("/tenants/{name}/runs/{run_id}/archive", include_in_schema=False)
    def archived_file(request: Request, name: Name, run_id: RunId) -> Response:
        caller = page_caller(request)
        admin(caller)
        run = _run(name, run_id)
        if not run.archive or site.config.cluster is not None or not Path(run.archive).is_file():
            raise HTTPException(404, f"run {run_id} of {name} has no archived file here")
        site.console.audit(
            caller.operator.name,
            address(request),
            "download",
            f"{name}/{run_id}",
            {"file": run.file},
        )
        return FileResponse(
            run.archive,
            media_type="application/octet-stream",
            filename=Path(run.file or "list.csv").name,
        )

    @api.get("/tenants/{name}/runs/{run_id}/replay", include_in_schema=False)
    def replay_page(request: Request, name: Name, run_id: RunId, force: bool = False) -> Response:
        caller = page_caller(request)
        admin(caller)
        return render(request, caller, "replay.html", run=_run(name, run_id), force=force)

    @api.post("/tenants/{name}/runs/{run_id}/replay", include_in_schema=False)
    async def replay_form(request: Request, name: Name, run_id: RunId) -> Response:
        caller, fields = await admin_form(request)
        run = await run_in_threadpool(
            _replay, caller, address(request), name, run_id, fields.get("force") == "yes"
        )
        return RedirectResponse(f"/tenants/{quote(name)}/runs/{run.run_id}", status_code=303)

    @api.get("/tenants/{name}/force", include_in_schema=False)
    def force_page(request: Request, name: Name) -> Response:
        caller = page_caller(request)
        admin(caller)
        from listferry.ops.history import run_history

        config = site.config
        last = run_history(config, config.tenant(name), 1)
        return render(request, caller, "force.html", name=name, run=last[0] if last else None)

    @api.post("/tenants/{name}/force", include_in_schema=False)
    async def force_form(request: Request, name: Name) -> Response:
        caller, _ = await admin_form(request)
        runs = await run_in_threadpool(_force, caller, address(request), name)
        numbered = [run for run in runs if run.run_id]
        where = f"/tenants/{quote(name)}"
        if numbered:
            where += f"/runs/{numbered[-1].run_id}"
        return RedirectResponse(where, status_code=303)

    def admin_page(request: Request, name: str) -> tuple[Caller, Tenant]:
        """A page only admins see, about tenant ``name``."""
        caller = page_caller(request)
        admin(caller)
        return caller, site.config.tenant(name)

    @api.get("/tenants/{name}/settings", include_in_schema=False)
    def settings_page(request: Request, name: Name) -> Response:
        caller, tenant = admin_page(request, name)
        return render(
            request,
            caller,
            "settings.html",
            tenant=tenant,
            fields=views.editable(tenant),
            problem=None,
        )

    @api.post("/tenants/{name}/settings", include_in_schema=False)
    async def settings_form(request: Request, name: Name) -> Response:
        caller, fields = await admin_form(request)
        try:
            changed = await run_in_threadpool(_set, caller, address(request), name, fields)
        except ConfigError as exc:
            if "no tenant" in str(exc):
                raise
            tenant = site.config.tenant(name)
            shown = {key: fields.get(key, text) for key, text in views.editable(tenant).items()}
            page = render(
                request,
                caller,
                "settings.html",
                tenant=tenant,
                fields=shown,
                problem=str(exc),
                allow=fields.get("allow_ips"),
                keys=fields.get("ssh_keys"),
            )
            page.status_code = 422
            return page
        where = f"/tenants/{quote(name)}?changed={len(changed)}"
        return RedirectResponse(where, status_code=303)

    @api.get("/tenants/{name}/password", include_in_schema=False)
    def password_page(request: Request, name: Name) -> Response:
        caller, tenant = admin_page(request, name)
        return render(request, caller, "new-password.html", tenant=tenant)

    @api.post("/tenants/{name}/password", include_in_schema=False)
    async def password_form(request: Request, name: Name) -> Response:
        caller, _ = await admin_form(request)
        password = await run_in_threadpool(_new_password, caller, address(request), name)
        return render(request, caller, "password.html", name=name, password=password)

    @api.get("/servers", include_in_schema=False)
    def servers_page(request: Request) -> Response:
        caller = page_caller(request)
        return render(request, caller, "servers.html", servers=_servers())

    @api.post("/servers/unblock", include_in_schema=False)
    async def unblock_form(request: Request) -> Response:
        caller, fields = await admin_form(request)
        await run_in_threadpool(_unblock, caller, address(request), fields.get("source", ""))
        return RedirectResponse("/servers", status_code=303)

    @api.get("/digest", include_in_schema=False)
    def digest_page(request: Request) -> Response:
        caller = page_caller(request)
        from listferry.ops.digest import make_digest

        return render(request, caller, "digest.html", digest=make_digest(site.config))

    @api.get("/audit", include_in_schema=False)
    def audit_page(request: Request, page: int = Query(1, ge=1, le=100_000)) -> Response:
        caller = page_caller(request)
        admin(caller)
        size = site.page_size
        entries = site.console.audit_log(size + 1, (page - 1) * size)
        return render(
            request,
            caller,
            "audit.html",
            entries=entries[:size],
            page=page,
            more=len(entries) > size,
        )

    @api.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(status_code=204)

    @api.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        path = HERE / "static" / name
        if "/" in name or name.startswith(".") or not path.is_file():
            raise HTTPException(404, "no such file")
        return FileResponse(path, headers={"Cache-Control": "max-age=3600"})

    # -- what pages and API share --------------------------------------------------------

    def _run(name: str, run_id: int) -> RunRecord:
        from listferry.ops.history import one_run

        config = site.config
        run = one_run(config, config.tenant(name), run_id)
        if run is None:
            raise HTTPException(404, f"{name} has no run {run_id}")
        return run

    def _command(*args: str) -> Any:
        """``listferry ARGS --json`` as its own process, as the schedule runs a sync (a
        big list never holds the console's process, a crash never takes it down): what
        it printed, or its one-line error as a refusal."""
        import subprocess
        import sys

        command = [sys.executable, "-m", "listferry", "--config", str(site.config_path)]
        try:
            done = subprocess.run(
                [*command, *args, "--json"],
                capture_output=True,
                text=True,
                timeout=ACTION_SECONDS,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            raise ListferryError(f"listferry {args[0]} took over {ACTION_SECONDS} s") from None
        if done.returncode in (0, 1) and done.stdout.strip():
            return json.loads(done.stdout)
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        said = lines[-1].removeprefix("Error: ").removeprefix("listferry: ") if lines else ""
        raise ListferryError(said or f"listferry {args[0]} ended with exit code {done.returncode}")

    def _replay(caller: Caller, where: str, name: str, run_id: int, force: bool) -> RunRecord:
        site.config.tenant(name)
        _run(name, run_id)
        detail: dict[str, Any] = {"force": force}
        site.console.audit(caller.operator.name, where, "replay", f"{name}/{run_id}", detail)
        try:
            ran = _command("replay", name, str(run_id), *(["--force"] if force else []))
        except ListferryError as exc:
            detail |= {"refused": str(exc)}
            site.console.audit(caller.operator.name, where, "refused", f"{name}/{run_id}", detail)
            raise
        run = RunRecord(**{k: v for k, v in ran.items() if k in RUN_FIELDS})
        detail |= {"run": run.run_id, "status": str(run.status)}
        site.console.audit(caller.operator.name, where, "replayed", f"{name}/{run_id}", detail)
        return run

    def _force(caller: Caller, where: str, name: str) -> list[RunRecord]:
        """``sync NAME --force``: apply the list a guard held in the home."""
        config = site.config
        config.tenant(name)
        site.console.audit(caller.operator.name, where, "force", name)
        cluster = ["--wait"] if config.cluster is not None else []
        try:
            ran = _command("sync", name, "--force", *cluster)
        except ListferryError as exc:
            site.console.audit(caller.operator.name, where, "refused", name, {"refused": str(exc)})
            raise
        runs = [RunRecord(**{k: v for k, v in r.items() if k in RUN_FIELDS}) for r in ran]
        detail = {"runs": [[r.run_id, str(r.status)] for r in runs]}
        site.console.audit(caller.operator.name, where, "forced", name, detail)
        return runs

    def _set(caller: Caller, where: str, name: str, fields: dict[str, str]) -> list[str]:
        """Change what the settings form changed; the keys changed."""
        from listferry.ops.tenants import parse_setting, set_tenant

        app = site.app()
        tenant = app.config.tenant(name)
        values: dict[str, Any] = {}
        for key, now in views.editable(tenant).items():
            given = fields.get(key)
            if given is not None and given.strip() != now:
                values.update([parse_setting(f"{key}={given.strip()}")])
        allow = views.lines(fields.get("allow_ips", ""))
        if "allow_ips" in fields and allow != list(tenant.allow_ips):
            values["allow_ips"] = views.networks(allow)
        keys = views.lines(fields.get("ssh_keys", ""))
        if "ssh_keys" in fields and keys != list(tenant.ssh_keys):
            values["ssh_keys"] = views.public_keys(keys)
        if values:
            set_tenant(app, name, values)
            shown_values = {k: v for k, v in values.items() if k != "ssh_keys"}
            if "ssh_keys" in values:
                shown_values["ssh_keys"] = f"{len(values['ssh_keys'])} key(s)"
            site.console.audit(caller.operator.name, where, "settings", name, shown_values)
        return sorted(values)

    def _new_password(caller: Caller, where: str, name: str) -> str:
        from listferry.ops.tenants import set_tenant

        app = site.app()
        app.config.tenant(name)
        password = secrets.token_urlsafe(15)
        set_tenant(app, name, {"password_hash": hash_password(password)})
        site.console.audit(caller.operator.name, where, "password", name)
        return password

    def _servers() -> dict[str, Any]:
        """The running serve's sessions and today's refusals, and the blocked addresses."""
        import time

        from listferry.serve.pulse import read_pulse

        config = site.config
        pulse = read_pulse(config.state_dir)
        blocked = []
        blocks = _blocks()
        if blocks is not None:
            try:
                blocked = [block.to_json() for block in blocks.active(time.time())]
            finally:
                blocks.close()
        return {
            "serving": pulse is not None,
            "at": pulse["at"] if pulse else None,
            "protocols": pulse["protocols"] if pulse else [],
            "sessions": pulse["sessions"] if pulse else {},
            "refusals": pulse["refusals"] if pulse else [],
            "blocked": blocked,
        }

    def _blocks() -> BlockBook | None:
        """The blocks (the cluster's, or this machine's file); None when none was kept."""
        from listferry.cluster.logins import blocks_of
        from listferry.serve.blocks import blocks_path

        config = site.config
        if config.cluster is None and not blocks_path(config.state_dir).exists():
            return None
        return blocks_of(config)

    def _unblock(caller: Caller, where: str, given: str) -> str:
        import time

        from listferry.serve.blocks import block_source

        try:
            source = block_source(given)
        except ListferryError as exc:
            raise HTTPException(422, str(exc)) from None
        blocks = _blocks()
        if blocks is None:
            raise HTTPException(404, f"{source} is not blocked")
        try:
            lifted = blocks.remove(source, time.time())
        finally:
            blocks.close()
        if not lifted:
            raise HTTPException(404, f"{source} is not blocked")
        site.console.audit(caller.operator.name, where, "unblock", source)
        return source

    # -- the API -------------------------------------------------------------------------

    @api.get("/api/me", summary="The operator asking")
    def api_me(request: Request) -> schemas.Operator:
        return api_caller(request).operator.to_json()

    @api.get("/api/status", summary="One entry per tenant, as `listferry status --json`")
    def api_status(request: Request) -> list[schemas.Status]:
        api_caller(request)
        return [row.to_json() for row in site.rows()]

    @api.get("/api/tenants", summary="The tenants' settings, as `listferry tenant list --json`")
    def api_tenants(request: Request) -> list[schemas.TenantSettings]:
        api_caller(request)
        return [tenant.to_json() for tenant in site.config.tenants.values()]

    @api.get("/api/tenants/{name}", summary="One tenant's settings (never a secret)")
    def api_tenant(request: Request, name: Name) -> schemas.TenantSettings:
        api_caller(request)
        return site.config.tenant(name).to_json()

    @api.get("/api/tenants/{name}/runs", summary="A tenant's runs, newest first")
    def api_runs(
        request: Request,
        name: Name,
        limit: int = Query(20, ge=1, le=1000),
        offset: int = Query(0, ge=0, le=10_000_000),
    ) -> list[schemas.Run]:
        api_caller(request)
        from listferry.ops.history import run_history

        config = site.config
        return [run.to_json() for run in run_history(config, config.tenant(name), limit, offset)]

    @api.get("/api/tenants/{name}/runs/{run_id}", summary="One run and its report")
    def api_run(request: Request, name: Name, run_id: RunId) -> schemas.RunWithReport:
        api_caller(request)
        run = _run(name, run_id)
        return {**run.to_json(), "report": run.report}

    @api.post(
        "/api/tenants/{name}/runs/{run_id}/replay",
        summary="Apply a run's archived file again (admin)",
        responses={403: {"description": "not an admin, or no CSRF token with a session"}},
    )
    def api_replay(request: Request, name: Name, run_id: RunId, force: bool = False) -> schemas.Run:
        caller = api_caller(request)
        csrf(caller, request.headers.get("x-csrf-token"))
        admin(caller)
        return _replay(caller, address(request), name, run_id, force).to_json()

    @api.get("/api/servers", summary="Sessions open, refusals today, blocked addresses")
    def api_servers(request: Request) -> schemas.Servers:
        api_caller(request)
        return _servers()

    @api.post("/api/servers/unblock", summary="Lift an address's block (admin)")
    def api_unblock(
        request: Request, address_: str = Query(..., alias="address", max_length=64)
    ) -> schemas.Unblocked:
        caller = api_caller(request)
        csrf(caller, request.headers.get("x-csrf-token"))
        admin(caller)
        return {"source": _unblock(caller, address(request), address_), "unblocked": True}

    @api.post(
        "/api/tenants/{name}/sync",
        summary="Apply the list a guard held in the home: `sync NAME --force` (admin)",
    )
    def api_force(request: Request, name: Name) -> list[schemas.Run]:
        caller = api_caller(request)
        csrf(caller, request.headers.get("x-csrf-token"))
        admin(caller)
        return [run.to_json() for run in _force(caller, address(request), name)]

    @api.get("/api/digest", summary="The digest, as `listferry digest --json`")
    def api_digest(request: Request, hours: float = Query(24, ge=1, le=24 * 366)) -> schemas.Digest:
        api_caller(request)
        from listferry.ops.digest import make_digest

        return make_digest(site.config, hours).to_json()

    @api.get("/api/audit", summary="The audit log, newest first (admin)")
    def api_audit(
        request: Request,
        limit: int = Query(100, ge=1, le=1000),
        offset: int = Query(0, ge=0, le=10_000_000),
    ) -> list[schemas.AuditEntry]:
        caller = api_caller(request)
        admin(caller)
        return site.console.audit_log(limit, offset)

    return api


def _local(target: str) -> str:
    """``target`` if it is a path on this site, else ``/``: never off to another site."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target
