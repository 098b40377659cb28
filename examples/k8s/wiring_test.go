package k8s

import (
	"net"
	"path"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// serverConfig is the part of the server's config the wiring depends on.
type serverConfig struct {
	Server struct {
		DataDir       string `json:"data_dir"`
		Bind          string `json:"bind"`
		HealthAddress string `json:"health_address"`
		AdminSocket   string `json:"admin_socket"`
		TrustDomain   string `json:"trust_domain"`
		K8sPSAT       struct {
			Clusters map[string]struct {
				ServiceAccountAllowList []string `json:"service_account_allow_list"`
				Audience                string   `json:"audience"`
				TokenFile               string   `json:"token_file"`
				CAFile                  string   `json:"ca_file"`
			} `json:"clusters"`
		} `json:"k8s_psat"`
	} `json:"server"`
}

// agentConfig is the part of the agent's config the wiring depends on.
type agentConfig struct {
	Agent struct {
		Server        string `json:"server"`
		TrustDomain   string `json:"trust_domain"`
		TrustBundle   string `json:"trust_bundle"`
		DataDir       string `json:"data_dir"`
		Socket        string `json:"socket"`
		HealthAddress string `json:"health_address"`
		NodeAttestor  string `json:"node_attestor"`
		K8sPSAT       struct {
			Cluster   string `json:"cluster"`
			TokenPath string `json:"token_path"`
		} `json:"k8s_psat"`
		WorkloadAttestors struct {
			K8s struct {
				KubeletURL    string `json:"kubelet_url"`
				KubeletCAFile string `json:"kubelet_ca_file"`
				NodeNameEnv   string `json:"node_name_env"`
			} `json:"k8s"`
		} `json:"workload_attestors"`
	} `json:"agent"`
}

// deployment is the examples' objects and configs, looked up once.
type deployment struct {
	base, whoami manifests
	server       *appsv1.StatefulSet
	agent        *appsv1.DaemonSet
	workload     *appsv1.Deployment
	serverCfg    serverConfig
	agentCfg     agentConfig
}

func loadDeployment(t *testing.T) *deployment {
	t.Helper()
	d := &deployment{base: load(t, "."), whoami: load(t, "whoami")}
	d.server = get[*appsv1.StatefulSet](t, d.base, "nhid-server")
	d.agent = get[*appsv1.DaemonSet](t, d.base, "nhid-agent")
	d.workload = get[*appsv1.Deployment](t, d.whoami, "whoami")
	unmarshal(t, get[*corev1.ConfigMap](t, d.base, "nhid-server").Data["server.yaml"], &d.serverCfg)
	unmarshal(t, get[*corev1.ConfigMap](t, d.base, "nhid-agent").Data["agent.yaml"], &d.agentCfg)
	return d
}

func unmarshal(t *testing.T, doc string, v any) {
	t.Helper()
	if err := yaml.Unmarshal([]byte(doc), v); err != nil {
		t.Fatal(err)
	}
}

func onlyContainer(t *testing.T, spec *corev1.PodSpec) *corev1.Container {
	t.Helper()
	if len(spec.Containers) != 1 {
		t.Fatalf("pod spec has %d containers, want 1", len(spec.Containers))
	}
	return &spec.Containers[0]
}

func volume(t *testing.T, spec *corev1.PodSpec, name string) *corev1.Volume {
	t.Helper()
	for i := range spec.Volumes {
		if spec.Volumes[i].Name == name {
			return &spec.Volumes[i]
		}
	}
	t.Fatalf("no volume %q", name)
	return nil
}

// mountAt returns the volume mounted exactly at dir (a file's directory).
func mountAt(t *testing.T, c *corev1.Container, dir string) corev1.VolumeMount {
	t.Helper()
	for _, m := range c.VolumeMounts {
		if m.MountPath == dir {
			return m
		}
	}
	t.Fatalf("container %s mounts nothing at %s", c.Name, dir)
	return corev1.VolumeMount{}
}

// mountHolding returns the deepest mount holding p.
func mountHolding(t *testing.T, c *corev1.Container, p string) corev1.VolumeMount {
	t.Helper()
	var best corev1.VolumeMount
	for _, m := range c.VolumeMounts {
		if (p == m.MountPath || strings.HasPrefix(p, m.MountPath+"/")) && len(m.MountPath) > len(best.MountPath) {
			best = m
		}
	}
	if best.Name == "" {
		t.Fatalf("container %s mounts nothing holding %s", c.Name, p)
	}
	return best
}

func port(t *testing.T, hostPort string) (string, int32) {
	t.Helper()
	host, p, err := net.SplitHostPort(hostPort)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return host, int32(n)
}

func containerPort(t *testing.T, c *corev1.Container, name string) int32 {
	t.Helper()
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	t.Fatalf("container %s has no port %q", c.Name, name)
	return 0
}

func TestWiring_WorkloadReachesTheAgentSocket(t *testing.T) {
	d := loadDeployment(t)
	agentPod, workloadPod := &d.agent.Spec.Template.Spec, &d.workload.Spec.Template.Spec
	socketDir := mountAt(t, onlyContainer(t, agentPod), path.Dir(d.agentCfg.Agent.Socket))
	hostDir := volume(t, agentPod, socketDir.Name).HostPath
	if hostDir == nil {
		t.Fatalf("the agent's socket directory is not a hostPath volume")
	}
	if !agentPod.HostPID {
		t.Error("the agent DaemonSet lacks hostPID: it could not see workloads' processes")
	}
	wc := onlyContainer(t, workloadPod)
	var mountPath string
	for _, m := range wc.VolumeMounts {
		if v := volume(t, workloadPod, m.Name); v.HostPath != nil && v.HostPath.Path == hostDir.Path {
			mountPath = m.MountPath
		}
	}
	if mountPath == "" {
		t.Fatalf("the workload does not mount the agent's socket directory %s", hostDir.Path)
	}
	want := "unix://" + path.Join(mountPath, path.Base(d.agentCfg.Agent.Socket))
	var got string
	for _, e := range wc.Env {
		if e.Name == "SPIFFE_ENDPOINT_SOCKET" {
			got = e.Value
		}
	}
	if got != want {
		t.Errorf("workload SPIFFE_ENDPOINT_SOCKET = %q, want %q", got, want)
	}
}

func TestWiring_AgentReachesTheServerThroughItsService(t *testing.T) {
	d := loadDeployment(t)
	svc := get[*corev1.Service](t, d.base, "nhid-server")
	host, agentPort := port(t, d.agentCfg.Agent.Server)
	if want := svc.Name + "." + svc.Namespace + ".svc"; host != want {
		t.Errorf("agent server host = %q, want the Service's DNS name %q", host, want)
	}
	var sp *corev1.ServicePort
	for i := range svc.Spec.Ports {
		if svc.Spec.Ports[i].Port == agentPort {
			sp = &svc.Spec.Ports[i]
		}
	}
	if sp == nil {
		t.Fatalf("Service %s has no port %d", svc.Name, agentPort)
	}
	sc := onlyContainer(t, &d.server.Spec.Template.Spec)
	_, bindPort := port(t, d.serverCfg.Server.Bind)
	if got := containerPort(t, sc, sp.TargetPort.StrVal); got != bindPort {
		t.Errorf("Service targets container port %d, the server binds %d", got, bindPort)
	}
	for k, v := range svc.Spec.Selector {
		if d.server.Spec.Template.Labels[k] != v {
			t.Errorf("Service selector %s=%s does not select the server's pods", k, v)
		}
	}
	if d.server.Spec.ServiceName != svc.Name {
		t.Errorf("StatefulSet serviceName = %q, want %q", d.server.Spec.ServiceName, svc.Name)
	}
	if d.agentCfg.Agent.TrustDomain != d.serverCfg.Server.TrustDomain {
		t.Errorf("agent trust domain %q, server's %q", d.agentCfg.Agent.TrustDomain, d.serverCfg.Server.TrustDomain)
	}
	if d.agent.Spec.Template.Spec.HostNetwork && d.agent.Spec.Template.Spec.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
		t.Error("a hostNetwork agent needs dnsPolicy ClusterFirstWithHostNet to resolve the Service")
	}
}

func TestWiring_ProjectedTokenMatchesTheServersPSATConfig(t *testing.T) {
	d := loadDeployment(t)
	a := d.agentCfg.Agent
	if a.NodeAttestor != "k8s_psat" {
		t.Fatalf("agent node_attestor = %q, want k8s_psat", a.NodeAttestor)
	}
	cluster, ok := d.serverCfg.Server.K8sPSAT.Clusters[a.K8sPSAT.Cluster]
	if !ok {
		t.Fatalf("the agent's cluster %q is not in the server's k8s_psat clusters", a.K8sPSAT.Cluster)
	}
	pod := &d.agent.Spec.Template.Spec
	m := mountAt(t, onlyContainer(t, pod), path.Dir(a.K8sPSAT.TokenPath))
	v := volume(t, pod, m.Name)
	if v.Projected == nil || len(v.Projected.Sources) != 1 || v.Projected.Sources[0].ServiceAccountToken == nil {
		t.Fatalf("volume %s is not a projected service-account token", v.Name)
	}
	tok := v.Projected.Sources[0].ServiceAccountToken
	if tok.Path != path.Base(a.K8sPSAT.TokenPath) {
		t.Errorf("token projected as %s, the agent reads %s", tok.Path, path.Base(a.K8sPSAT.TokenPath))
	}
	if tok.Audience != cluster.Audience {
		t.Errorf("token audience %q, the server requires %q", tok.Audience, cluster.Audience)
	}
	sa := d.agent.Namespace + ":" + pod.ServiceAccountName
	if !slices.Contains(cluster.ServiceAccountAllowList, sa) {
		t.Errorf("the agent runs as %s, not in the server's allow list %v", sa, cluster.ServiceAccountAllowList)
	}
}

func TestWiring_FilesTheConfigsNameAreMounted(t *testing.T) {
	d := loadDeployment(t)
	server := &d.server.Spec.Template.Spec
	sc := onlyContainer(t, server)
	data := mountHolding(t, sc, d.serverCfg.Server.DataDir)
	if !slices.ContainsFunc(d.server.Spec.VolumeClaimTemplates, func(c corev1.PersistentVolumeClaim) bool { return c.Name == data.Name }) {
		t.Errorf("the server's data dir is on volume %s, not a volumeClaimTemplate", data.Name)
	}
	if v := volume(t, server, mountAt(t, sc, path.Dir(d.serverCfg.Server.AdminSocket)).Name); v.EmptyDir == nil {
		t.Errorf("the admin socket's directory is not an emptyDir")
	}
	checkConfigArg(t, sc, server, "nhid-server")

	agent := &d.agent.Spec.Template.Spec
	ac := onlyContainer(t, agent)
	a := d.agentCfg.Agent
	bundle := volume(t, agent, mountAt(t, ac, path.Dir(a.TrustBundle)).Name)
	if bundle.ConfigMap == nil || bundle.ConfigMap.Name != "nhid-bundle" {
		t.Errorf("trust_bundle %s is not on ConfigMap nhid-bundle", a.TrustBundle)
	}
	if v := volume(t, agent, mountAt(t, ac, a.DataDir).Name); v.HostPath == nil {
		t.Errorf("the agent's data dir is not on the host: a restarted agent would attest again")
	}
	checkConfigArg(t, ac, agent, "nhid-agent")
	k := a.WorkloadAttestors.K8s
	envOK := slices.ContainsFunc(ac.Env, func(e corev1.EnvVar) bool {
		return e.Name == k.NodeNameEnv && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName"
	})
	if !envOK {
		t.Errorf("$%s is not set from spec.nodeName", k.NodeNameEnv)
	}
	host, hp := port(t, a.HealthAddress)
	for _, p := range []*corev1.Probe{ac.ReadinessProbe, ac.LivenessProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Port.IntVal != hp || p.HTTPGet.Host != host {
			t.Errorf("agent probe %+v does not reach health_address %s", p, a.HealthAddress)
		}
	}
	if ac.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Errorf("agent readiness probe path %s, want /readyz", ac.ReadinessProbe.HTTPGet.Path)
	}
	_, sp := port(t, d.serverCfg.Server.HealthAddress)
	if got := containerPort(t, sc, sc.ReadinessProbe.HTTPGet.Port.StrVal); got != sp || sc.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Errorf("server readiness probe on port %d %s, health_address port %d", got, sc.ReadinessProbe.HTTPGet.Path, sp)
	}
}

// checkConfigArg requires --config to name the config key of the
// ConfigMap the container mounts.
func checkConfigArg(t *testing.T, c *corev1.Container, pod *corev1.PodSpec, configMap string) {
	t.Helper()
	i := slices.Index(c.Args, "--config")
	if i < 0 || i+1 >= len(c.Args) {
		t.Fatalf("container %s has no --config argument: %v", c.Name, c.Args)
	}
	file := c.Args[i+1]
	v := volume(t, pod, mountAt(t, c, path.Dir(file)).Name)
	if v.ConfigMap == nil || v.ConfigMap.Name != configMap {
		t.Errorf("%s's --config %s is not on ConfigMap %s", c.Name, file, configMap)
	}
}
