// Package probe checks whether merchant processes answer: an HTTP GET of a
// health path expecting a status, or a plain TCP connect. One Prober, with
// one shared HTTP client, serves every merchant.
package probe
