package main

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// repoRoot is the repository root, seen from this package's directory.
const repoRoot = "../.."

// dockerfileInstructions returns the instructions of a Dockerfile's final
// stage (after its last FROM), continuation lines joined, comments dropped.
// A COPY keeps only its options other than --from and its destination: the
// sources differ between a multi-stage build and a prebuilt binary, what
// lands where with which owner must not.
func dockerfileInstructions(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	cur := ""
	for _, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		if cur == "" && (l == "" || strings.HasPrefix(l, "#")) {
			continue
		}
		if strings.HasSuffix(l, "\\") {
			cur += strings.TrimSuffix(l, "\\") + " "
			continue
		}
		lines = append(lines, strings.Join(strings.Fields(cur+l), " "))
		cur = ""
	}
	last := -1
	for i, l := range lines {
		if strings.HasPrefix(strings.ToUpper(l), "FROM ") {
			last = i
		}
	}
	if last < 0 {
		t.Fatalf("%s has no FROM", path)
	}
	var out []string
	for _, l := range lines[last:] {
		f := strings.Fields(l)
		if strings.EqualFold(f[0], "COPY") {
			kept := []string{"COPY"}
			for _, a := range f[1 : len(f)-1] {
				if strings.HasPrefix(a, "--") && !strings.HasPrefix(a, "--from=") {
					kept = append(kept, a)
				}
			}
			l = strings.Join(append(kept, f[len(f)-1]), " ")
		}
		out = append(out, l)
	}
	return out
}

// TestContainerfilesAlike: the image packed from a prebuilt binary (the one
// the run test below can build here) is the image of the Dockerfile, and the
// Dockerfile's final stage is what the README promises: an empty base, a
// non-root user, the data volume, every listener exposed, the healthcheck.
func TestContainerfilesAlike(t *testing.T) {
	full := dockerfileInstructions(t, filepath.Join(repoRoot, "deploy/container/Dockerfile"))
	pre := dockerfileInstructions(t, filepath.Join(repoRoot, "deploy/container/Containerfile.prebuilt"))
	if !slices.Equal(full, pre) {
		t.Fatalf("the final stages differ:\nDockerfile:\n  %s\nContainerfile.prebuilt:\n  %s",
			strings.Join(full, "\n  "), strings.Join(pre, "\n  "))
	}
	text := strings.Join(full, "\n")
	for _, want := range []string{
		"FROM scratch",
		"USER 65532:65532",
		`VOLUME ["/data"]`,
		"TWINHUB_DATA_DIR=/data",
		"COPY --chown=65532:65532 /data",
		`CMD ["/twinhub", "healthcheck"]`,
		`ENTRYPOINT ["/twinhub"]`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the final stage lacks %q:\n%s", want, text)
		}
	}
	// Every listener twinhub has listens on all interfaces and is exposed.
	expose := regexp.MustCompile(`(?m)^EXPOSE (.*)$`).FindStringSubmatch(text)
	if expose == nil {
		t.Fatal("no EXPOSE")
	}
	for flag, port := range map[string]string{"HTTP": "8080", "MQTT": "1883", "MQTTS": "8883", "HTTPS": "8443", "NATS": "4222"} {
		if !strings.Contains(text, "TWINHUB_"+flag+"_ADDR=0.0.0.0:"+port) {
			t.Errorf("TWINHUB_%s_ADDR is not 0.0.0.0:%s", flag, port)
		}
		if !slices.Contains(strings.Fields(expose[1]), port) {
			t.Errorf("port %s (%s) is not exposed: EXPOSE %s", port, flag, expose[1])
		}
	}
	// The builder stage builds a static, path-free binary.
	b, _ := os.ReadFile(filepath.Join(repoRoot, "deploy/container/Dockerfile"))
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "./cmd/twinhub"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("the Dockerfile's build lacks %s", want)
		}
	}
}

// podmanRun is the podman command line that runs a container on this
// machine, or a reason why none does.
func podmanRun(t *testing.T, image string) ([]string, string) {
	t.Helper()
	if _, err := exec.LookPath("podman"); err != nil {
		return nil, "podman is not installed (Debian package podman)"
	}
	// The first that runs: podman's defaults, then the settings a machine
	// like the test machine needs (crun refuses cgroups v1 with a non-empty
	// cgroup v2 hierarchy mounted beside it, so runc; no CAP_SYS_RESOURCE, so
	// ulimits no higher than the current ones).
	candidates := [][]string{
		{"podman", "run"},
		{"podman", "--runtime", "runc", "run", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"},
	}
	var reasons []string
	for _, c := range candidates {
		out, err := exec.Command(c[0], append(c[1:], "--rm", image, "version")...).CombinedOutput()
		if err == nil && strings.Contains(string(out), "twinhub") {
			return c, ""
		}
		reasons = append(reasons, fmt.Sprintf("%s: %v: %s", strings.Join(c, " "), err, lastLine(string(out))))
	}
	return nil, "no container runs here: " + strings.Join(reasons, "; ")
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// TestContainerImage builds the image from a binary built here (no registry
// is needed for FROM scratch), runs the hub in it, and drives it with the
// image's own twinhub: a device created and its twin read, as the non-root
// user, in the data volume.
func TestContainerImage(t *testing.T) {
	if _, err := exec.LookPath("podman"); err != nil {
		t.Skip("podman is not installed (Debian package podman)")
	}
	image := buildPrebuiltImage(t, "twinhub-test", "deploy/container/Containerfile.prebuilt", map[string]string{
		"twinhub": ".", "ca-certificates.crt": "/etc/ssl/certs/ca-certificates.crt"})

	inspect, err := exec.Command("podman", "image", "inspect", "--format",
		"{{.Config.User}}|{{json .Config.Volumes}}|{{json .Config.Healthcheck.Test}}", image).CombinedOutput()
	if err != nil {
		t.Fatalf("podman image inspect: %v\n%s", err, inspect)
	}
	for _, want := range []string{"65532:65532|", `"/data"`, `["CMD","/twinhub","healthcheck"]`} {
		if !strings.Contains(string(inspect), want) {
			t.Errorf("image config %s lacks %s", inspect, want)
		}
	}

	run, reason := podmanRun(t, image)
	if run == nil {
		t.Skip(reason)
	}
	name := fmt.Sprintf("twinhub-test-%d", os.Getpid())
	// The image as a user runs it: its own addresses inside the container,
	// the HTTP port published on a free loopback port of the host.
	args := append(run[1:], "-d", "--name", name, "-p", "127.0.0.1::8080", image)
	if out, err := exec.Command(run[0], args...).CombinedOutput(); err != nil {
		t.Fatalf("podman run: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if t.Failed() {
			logs, _ := exec.Command("podman", "logs", name).CombinedOutput()
			t.Logf("container log:\n%s", logs)
		}
		exec.Command("podman", "rm", "-f", name).Run()
	})
	waitFor(t, 60*time.Second, "the hub in the container to log that it is ready", func() bool {
		logs, _ := exec.Command("podman", "logs", name).CombinedOutput()
		return strings.Contains(string(logs), `msg="twinhub is ready" http=[::]:8080`)
	})
	port, err := exec.Command("podman", "port", name, "8080").Output()
	if err != nil {
		t.Fatalf("podman port: %v", err)
	}
	resp, err := http.Get("http://" + strings.TrimSpace(string(port)) + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/readyz of the hub in the container, from the host: %d", resp.StatusCode)
	}
	exec1 := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("podman", append([]string{"exec", name, "/twinhub"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("twinhub %s in the container: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	exec1("device", "create", "imageDevice")
	exec1("twin", "update", "imageDevice", "--desired", `{"mode":"eco"}`)
	if twin := exec1("twin", "get", "imageDevice"); !strings.Contains(twin, `"eco"`) {
		t.Fatalf("twin read in the container lacks the desired property:\n%s", twin)
	}
	if id := exec1("version"); !strings.HasPrefix(id, "twinhub ") {
		t.Fatalf("twinhub version: %q", id)
	}
	// The image's HEALTHCHECK, run once as the engine runs it (podman runs
	// it on a timer through systemd where there is one), finds the hub ready.
	if help, _ := exec.Command(binary, "--help").Output(); !regexp.MustCompile(`(?m)^\s+healthcheck\s`).Match(help) {
		t.Logf("this build has no `twinhub healthcheck` yet (the probes work adds it); the HEALTHCHECK is not run")
	} else if out, err := exec.Command("podman", "healthcheck", "run", name).CombinedOutput(); err != nil {
		t.Errorf("podman healthcheck run: %v\n%s", err, out)
	}
	// The data directory is the volume, written by the unprivileged user.
	owner, err := exec.Command("podman", "exec", name, "/twinhub", "connection-string").CombinedOutput()
	if err != nil || !strings.Contains(string(owner), "SharedAccessKeyName=iothubowner") {
		t.Fatalf("connection-string from the volume's policies.json: %v\n%s", err, owner)
	}
}

// TestImageBuildContext: what the Dockerfile's builder stage gets (the
// repository root less Dockerfile.dockerignore, as podman filters it) is
// enough to build twinhub the way the builder does.
func TestImageBuildContext(t *testing.T) {
	if _, err := exec.LookPath("podman"); err != nil {
		t.Skip("podman is not installed (Debian package podman)")
	}
	dir := t.TempDir()
	containerfile := filepath.Join(dir, "Containerfile")
	if err := os.WriteFile(containerfile, []byte("FROM scratch\nCOPY . /src\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	image := fmt.Sprintf("localhost/twinhub-context-test:%d", os.Getpid())
	out, err := exec.Command("podman", "build", "-t", image, "-f", containerfile,
		"--ignorefile", filepath.Join(repoRoot, "deploy/container/Dockerfile.dockerignore"), repoRoot).CombinedOutput()
	if err != nil {
		t.Fatalf("podman build of the context: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("podman", "rmi", "-f", image).Run() })
	// podman create needs no runtime; podman cp reads the image's files.
	name := fmt.Sprintf("twinhub-context-test-%d", os.Getpid())
	if out, err := exec.Command("podman", "create", "--name", name, image, "/none").CombinedOutput(); err != nil {
		t.Fatalf("podman create: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("podman", "rm", "-f", name).Run() })
	src := filepath.Join(dir, "src")
	if out, err := exec.Command("podman", "cp", name+":/src", src).CombinedOutput(); err != nil {
		t.Fatalf("podman cp: %v\n%s", err, out)
	}
	for _, gone := range []string{".git", "README.md", "cmd/twinhub/harness_test.go", "deploy/container"} {
		if _, err := os.Stat(filepath.Join(src, gone)); err == nil {
			t.Errorf("%s is in the build context; Dockerfile.dockerignore should keep it out", gone)
		}
	}
	build := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(dir, "twinhub"), "./cmd/twinhub")
	build.Dir = src
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building twinhub from the filtered context, as the Dockerfile does: %v\n%s", err, out)
	}
}

// buildPrebuiltImage builds an image named localhost/NAME:PID with podman
// from containerfile (absolute, or relative to the repository root) and a context of
// files: a static build of each Go package given as "." or a module path,
// or a copy of each other path; plus an empty directory data. The image is
// removed when the test ends.
func buildPrebuiltImage(t *testing.T, name, containerfile string, files map[string]string) string {
	t.Helper()
	ctx := t.TempDir()
	if err := os.Mkdir(filepath.Join(ctx, "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	for dst, src := range files {
		if !strings.HasPrefix(src, "/") {
			build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", filepath.Join(ctx, dst), src)
			build.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := build.CombinedOutput(); err != nil {
				t.Fatalf("building %s statically: %v\n%s", src, err, out)
			}
			continue
		}
		b, err := os.ReadFile(src)
		if err != nil {
			t.Skipf("nothing to pack as %s: %v", dst, err)
		}
		if err := os.WriteFile(filepath.Join(ctx, dst), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if !filepath.IsAbs(containerfile) {
		containerfile = filepath.Join(repoRoot, containerfile)
	}
	image := fmt.Sprintf("localhost/%s:%d", name, os.Getpid())
	out, err := exec.Command("podman", "build", "--format", "docker", "-t", image, "-f", containerfile, ctx).CombinedOutput()
	if err != nil {
		t.Fatalf("podman build: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("podman", "rmi", "-f", image).Run() })
	return image
}

// TestDockerfileBuild runs the whole multi-stage Dockerfile, its build
// stage included, with a Go toolchain image made here (busybox for the
// shell, this machine's Go in /usr/local/go, the CA bundle) in place of the
// golang image no registry serves here (--build-arg GO_IMAGE), and checks
// that the image's twinhub reports the version given as VERSION. The build
// downloads the modules from the proxy and compiles without a cache: about
// five minutes on two cores, so it runs only with TWINHUB_TEST_DOCKERFILE=1.
func TestDockerfileBuild(t *testing.T) {
	if os.Getenv("TWINHUB_TEST_DOCKERFILE") != "1" {
		t.Skip("set TWINHUB_TEST_DOCKERFILE=1 to build the multi-stage Dockerfile (about 5 minutes on 2 cores)")
	}
	if _, err := exec.LookPath("podman"); err != nil {
		t.Skip("podman is not installed (Debian package podman)")
	}
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		t.Skip("busybox is not installed (Debian package busybox-static)")
	}
	goroot, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.TempDir()
	for _, dir := range []string{"bin", "tmp"} {
		if err := os.Mkdir(filepath.Join(ctx, dir), 0o1777); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range [][]string{
		{"cp", busybox, filepath.Join(ctx, "bin/sh")},
		{"cp", busybox, filepath.Join(ctx, "bin/mkdir")},
		{"cp", "-a", strings.TrimSpace(string(goroot)), filepath.Join(ctx, "go")},
		{"cp", "/etc/ssl/certs/ca-certificates.crt", ctx},
	} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", c, err, out)
		}
	}
	containerfile := filepath.Join(ctx, "Containerfile")
	if err := os.WriteFile(containerfile, []byte(`FROM scratch
COPY bin /bin
COPY tmp /tmp
COPY go /usr/local/go
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV PATH=/usr/local/go/bin:/bin GOPATH=/go HOME=/root GOTOOLCHAIN=local
`), 0o644); err != nil {
		t.Fatal(err)
	}
	goImage := fmt.Sprintf("localhost/twinhub-go-builder-test:%d", os.Getpid())
	if out, err := exec.Command("podman", "build", "-t", goImage, "-f", containerfile, ctx).CombinedOutput(); err != nil {
		t.Fatalf("podman build of the Go toolchain image: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("podman", "rmi", "-f", goImage).Run() })

	// RUN steps need a runtime that works here; podmanRun finds it with the
	// toolchain image (its busybox answers `version` with an error, so the
	// probe runs twinhub's prebuilt image instead).
	image := buildPrebuiltImage(t, "twinhub-probe-test", "deploy/container/Containerfile.prebuilt", map[string]string{
		"twinhub": ".", "ca-certificates.crt": "/etc/ssl/certs/ca-certificates.crt"})
	run, reason := podmanRun(t, image)
	if run == nil {
		t.Skip(reason)
	}
	global := run[1:slices.Index(run, "run")] // e.g. --runtime runc
	var limits []string
	for i, a := range run {
		if a == "--ulimit" {
			limits = append(limits, a, run[i+1])
		}
	}
	full := fmt.Sprintf("localhost/twinhub-dockerfile-test:%d", os.Getpid())
	args := append(append(append([]string{}, global...), "build"), limits...)
	args = append(args, "--format", "docker", "-t", full, "--build-arg", "GO_IMAGE="+goImage,
		"--build-arg", "VERSION=9.8.7-test", "-f", filepath.Join(repoRoot, "deploy/container/Dockerfile"), repoRoot)
	out, err := exec.Command("podman", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("podman build -f deploy/container/Dockerfile: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("podman", "rmi", "-f", full).Run() })
	got, err := exec.Command(run[0], append(append([]string{}, run[1:]...), "--rm", full, "version")...).CombinedOutput()
	if err != nil || !strings.Contains(string(got), "twinhub 9.8.7-test") {
		t.Fatalf("twinhub version in the Dockerfile's image: %v\n%s", err, got)
	}
}
