package kubetest

import (
	"slices"
	"sort"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
)

// allows applies RBAC's rule semantics to a resource request: some rule
// must match the verb, the API group, the resource (or
// resource/subresource) and, if it names any, the object's name.
func allows(rules []rbacv1.PolicyRule, r Request) bool {
	resource := r.Resource
	if r.Subresource != "" {
		resource += "/" + r.Subresource
	}
	for _, rule := range rules {
		if matches(rule.Verbs, r.Verb) && matches(rule.APIGroups, r.APIGroup) &&
			matches(rule.Resources, resource) &&
			(len(rule.ResourceNames) == 0 || slices.Contains(rule.ResourceNames, r.Name)) {
			return true
		}
	}
	return false
}

func matches(values []string, v string) bool {
	return slices.Contains(values, rbacv1.VerbAll) || slices.Contains(values, v)
}

func sortPods(pods []corev1.Pod) {
	sort.Slice(pods, func(i, j int) bool {
		if pods[i].Namespace != pods[j].Namespace {
			return pods[i].Namespace < pods[j].Namespace
		}
		return pods[i].Name < pods[j].Name
	})
}
