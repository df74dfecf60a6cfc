package pipeline

import "time"

// RolloutQuery asks how one desired property converged across the fleet:
// at Points instants evenly spread from From to To, which share of the
// devices with the desired property set reported the same value back.
type RolloutQuery struct {
	// Path is the desired property, dotted below properties.desired (e.g.
	// "firmware.version").
	Path     string
	From, To time.Time
	Points   int
}

// RolloutPoint is the state of a rollout at one instant.
type RolloutPoint struct {
	Time string `json:"time"`
	// Targeted counts the devices whose desired property was set then.
	Targeted uint64 `json:"targeted"`
	// Matching counts those of them that had reported the same value.
	Matching uint64 `json:"matching"`
}
