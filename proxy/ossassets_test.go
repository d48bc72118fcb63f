package proxy

import "testing"

func TestOSSFile(t *testing.T) {
	cases := []struct {
		tags         []string
		loader, name string
		root, rel    string
		ok           bool
	}{
		{[]string{"output"}, "a/b.png", "b.png", "output", "a/b.png", true},
		{[]string{"input", "pasted"}, "", "c.png", "input", "c.png", true},
		{[]string{"models", "model_type:checkpoints"}, "sd/v1.safetensors", "", "models", "checkpoints/sd/v1.safetensors", true},
		{[]string{"models"}, "x.safetensors", "", "", "", false},
		{[]string{"models", "model_type:../etc"}, "x", "", "", "", false},
		{[]string{"output"}, "../../etc/passwd", "", "", "", false},
		{[]string{"output"}, "/abs.png", "", "", "", false},
		{[]string{"favorite"}, "a.png", "", "", "", false},
	}
	for _, c := range cases {
		root, rel, ok := ossFile(c.tags, c.loader, c.name)
		if root != c.root || rel != c.rel || ok != c.ok {
			t.Errorf("ossFile(%v, %q, %q) = %q %q %v", c.tags, c.loader, c.name, root, rel, ok)
		}
	}
}
