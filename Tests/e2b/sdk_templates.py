"""The SDK's template builder (`Template().…`, `Template.build`) against
Sprout: files uploaded by hash only when the server lacks them, steps run
as E2B runs them (as `user` on E2B's base image), a start command with
`wait_for_port` (a warm env), `Sandbox.create(name)` starting the result."""
import os
import tempfile

from e2b import BuildException, Sandbox, Template, wait_for_port

from sdk_common import RUN, check


def templates():
    context = tempfile.mkdtemp()
    os.makedirs(os.path.join(context, "app"))
    with open(os.path.join(context, "app", "index.html"), "w") as f:
        f.write(f"hello from template {RUN}\n")
    with open(os.path.join(context, "notes.txt"), "w") as f:
        f.write("notes\n")
    name = f"tpl-{RUN}"

    def template(extra=None):
        return (
            Template(file_context_path=context)
            .from_base_image()
            .set_envs({"APP_MODE": "test", **(extra or {})})
            .run_cmd("mkdir -p /srv && chown user:user /srv", user="root")
            .set_workdir("/srv")
            .copy("app", "/srv/app/")
            .copy("notes.txt", "/srv/notes.txt", mode=0o600)
            .run_cmd("echo built-by-$(id -un) > built.txt")
            .set_start_cmd("python3 -m http.server 8000 --directory /srv/app", wait_for_port(8000))
        )

    logs = []
    info = Template.build(template(), name, on_build_logs=lambda entry: logs.append(entry.message))
    check("template: built from e2bdev/base (Sprout's base env) with copy, run_cmd, set_envs, set_workdir, set_start_cmd",
          info.template_id == name and any("memory image taken" in line for line in logs), "\n".join(logs[-30:]))
    check("template: the name exists", Template.exists(name))

    sbx = Sandbox.create(name, timeout=120)
    try:
        r = sbx.commands.run("id -un; pwd; echo $APP_MODE; cat built.txt; stat -c '%a %U' notes.txt app/index.html")
        check("template: sandboxes run as user in the workdir, with the template's env and files",
              r.stdout == "user\n/srv\ntest\nbuilt-by-user\n600 root\n644 root\n", repr(r.stdout))
        r = sbx.commands.run("curl -s http://127.0.0.1:8000/index.html")
        check("template: the start command runs (from the warm env's memory image)", r.stdout == f"hello from template {RUN}\n", repr(r.stdout))
    finally:
        sbx.kill()

    again = []
    Template.build(template(), name, on_build_logs=lambda entry: again.append(entry.message))
    check("template: an unchanged build uploads nothing and builds nothing",
          any("Skipping upload of 'app'" in line for line in again) and any("nothing to build" in line for line in again), "\n".join(again))

    tagged = Template.assign_tags(name, ["stable", "v1"])
    check("template: tags assigned to the template's build", sorted(tagged.tags) == ["stable", "v1"] and len(tagged.build_id) == 36, repr(tagged))
    sbx = Sandbox.create(f"{name}:stable", timeout=60)
    try:
        r = sbx.commands.run("cat /srv/built.txt")
        check("template: Sandbox.create('name:tag') starts the tagged build", r.stdout == "built-by-user\n", repr(r.stdout))
    finally:
        sbx.kill()
    tags = sorted(t.tag for t in Template.get_tags(name))
    check("template: get_tags lists them", tags == ["stable", "v1"], repr(tags))
    Template.remove_tags(name, "v1")
    check("template: remove_tags takes one away", sorted(t.tag for t in Template.get_tags(name)) == ["stable"] and not Template.exists(f"{name}:v1")
          and Template.exists(f"{name}:stable"))
    Template.build(template({"EXTRA": "1"}), f"{name}:next")
    sbx = Sandbox.create(f"{name}:next", timeout=60)
    try:
        r = sbx.commands.run("echo $EXTRA")
        check("template: a build with a tag names its own env; the other tags stay where they were",
              r.stdout == "1\n" and Template.exists(f"{name}:stable"), repr(r.stdout))
    finally:
        sbx.kill()

    try:
        Template.build(Template(file_context_path=context).from_base_image().run_cmd("echo about to fail; exit 3"), f"{name}-bad")
        check("template: a failing step fails the build", False, "built")
    except BuildException as e:
        check("template: a failing step fails the build, saying why", "exited with 3" in str(e), repr(e))
    check("template: a failed build makes no template", not Template.exists(f"{name}-bad"))
