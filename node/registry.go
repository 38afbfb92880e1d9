package node

import (
	"context"
	"fmt"
	"regexp"
	"sort"
	"sync"

	"github.com/durable-run/durable"
)

// Class is a registered class.
type Class struct {
	Name    string
	Factory durable.Factory
	// HasAlarm says the class's objects implement durable.Alarmer. It is
	// declared at registration because SetAlarm must be refused before the
	// object's first alarm, not discovered when it fires.
	HasAlarm bool
}

var classNameRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_.-]{0,127}$`)

// Registry maps class names to factories. It is safe for concurrent use;
// classes are normally registered before the node starts.
type Registry struct {
	mu      sync.RWMutex
	classes map[string]Class
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{classes: map[string]Class{}} }

// Register adds a class. hasAlarm declares that its objects implement
// durable.Alarmer (checked when an object is created).
func (r *Registry) Register(name string, factory durable.Factory, hasAlarm bool) error {
	if !classNameRE.MatchString(name) {
		return fmt.Errorf("node: class name %q must match %s", name, classNameRE)
	}
	if factory == nil {
		return fmt.Errorf("node: class %q has a nil factory", name)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.classes[name]; ok {
		return fmt.Errorf("node: class %q registered twice", name)
	}
	r.classes[name] = Class{Name: name, Factory: factory, HasAlarm: hasAlarm}
	return nil
}

// Lookup returns the class registered under name.
func (r *Registry) Lookup(name string) (Class, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	c, ok := r.classes[name]
	if !ok {
		return Class{}, fmt.Errorf("%w: %q", durable.ErrUnknownClass, truncate(name))
	}
	return c, nil
}

// Names lists the registered classes in order.
func (r *Registry) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]string, 0, len(r.classes))
	for n := range r.classes {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// RegisterClass registers a class whose factory returns a concrete type T and
// detects from T whether the class handles alarms.
func RegisterClass[T durable.Object](r *Registry, name string, factory func(context.Context, durable.State) (T, error)) error {
	var zero T
	_, hasAlarm := any(zero).(durable.Alarmer)
	return r.Register(name, func(ctx context.Context, s durable.State) (durable.Object, error) {
		return factory(ctx, s)
	}, hasAlarm)
}
