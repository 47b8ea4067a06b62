package spec

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/hashicorp/hcl/v2"

	"steward/internal/dsn"
)

// validateMerchants checks what needs the whole fleet: references, version
// selection and ports.
//
// refsKnown is false when a spec file did not parse: the packages,
// databases and defaults it declares are unknown, so references to them
// are not checked (they would be reported missing, burying the real
// error).
func validateMerchants(d *decoder, fl *Fleet, raws []*rawMerchant, opts Options, refsKnown bool) {
	dbNames := sortedKeys(fl.Databases)
	pkgNames := sortedKeys(fl.Packages)
	portOwner := map[int]*rawMerchant{}
	dbOwner := map[string]*rawMerchant{} // server and db_name -> merchant
	domainOwner := map[string]*rawMerchant{}
	prefixOwner := map[string]*rawMerchant{}
	sort.Slice(raws, func(i, j int) bool { return lessRange(raws[i].m.DeclRange, raws[j].m.DeclRange) })
	for _, rm := range raws {
		m := rm.m
		at := m.DeclRange
		attrRange := func(a *hcl.Attribute) hcl.Range {
			if a != nil {
				return a.Expr.Range()
			}
			return at
		}
		// Package.
		pk := fl.Packages[m.Package]
		switch {
		case !refsKnown:
		case m.Package == "":
			d.errorf(at, "Missing package", "Merchant %q has no package; set package = \"NAME\" in the merchant or in defaults. Declared packages: %s.", m.ID, quoteList(pkgNames))
		case pk == nil:
			d.errorf(attrRange(rm.pkgAttr), "Unknown package", "Merchant %q uses package %q, which is not declared. Declared packages: %s.", m.ID, m.Package, quoteList(pkgNames))
		}
		// Version or channel.
		switch {
		case !refsKnown && m.Channel == "" && m.Version == "":
			// Its channel may come from defaults in a file that did not parse.
		case rm.hasChannel && rm.hasVersion:
			d.errorf(rm.verAttr.Range, "Both version and channel", "Merchant %q sets both version and channel; set version to pin it, or channel to follow a channel, not both.", m.ID)
		case m.Channel == "" && m.Version == "":
			d.errorf(at, "No version", "Merchant %q has neither version nor channel; pin it with version = \"X.Y.Z\" or follow a channel with channel = \"NAME\".", m.ID)
		case m.Channel != "" && pk != nil:
			v, ok := pk.Channels[m.Channel]
			if !ok {
				d.errorf(attrRange(rm.chanAttr), "Unknown channel", "Package %q has no channel %q. Its channels: %s.", m.Package, m.Channel, quoteList(sortedKeys(pk.Channels)))
			} else {
				m.Version = v
				if pk.SensitiveFields["channel."+m.Channel] || m.SensitiveFields["channel"] {
					m.SensitiveFields["version"] = true
				}
			}
		case m.Version != "" && !versionRe.MatchString(m.Version):
			d.errorf(attrRange(rm.verAttr), "Invalid version", "%q is not a version; use digits, letters, '.', '+', '_' and '-', for example \"1.4.2\".", m.Version)
		}
		// Database.
		if m.Database != "" && refsKnown {
			if _, ok := fl.Databases[m.Database]; !ok {
				d.errorf(attrRange(rm.dbAttr), "Unknown database", "Merchant %q refers to database %q, which is not declared. Declared databases: %s.", m.ID, m.Database, quoteList(dbNames))
			}
		}
		// The database on the server, and the environment it goes into.
		if oneOf(m.DBName, reservedDBNames...) {
			rng := at
			if rm.dbNameAttr != nil {
				rng = rm.dbNameAttr.Expr.Range()
			}
			d.errorf(rng, "Reserved db_name", "Merchant %q would use the database %q, one of PostgreSQL's own (%s); set db_name to another name.", m.ID, m.DBName, strings.Join(reservedDBNames, ", "))
		}
		if db := fl.Databases[m.Database]; db != nil && m.DBName != "" {
			server := dsn.Server(db.DSN.Reveal())
			if server == "" {
				server = "database " + m.Database
			}
			key := server + "/" + m.DBName
			if other, ok := dbOwner[key]; ok {
				// Merchants may share a database only while they run one
				// release of one package: a release migrates the schema
				// every merchant on it must run with.
				if o := other.m; o.Package != m.Package || o.Version != m.Version {
					rng := at
					if rm.dbNameAttr != nil {
						rng = rm.dbNameAttr.Expr.Range()
					}
					d.errorf(rng, "Database shared by different versions", "Merchants %q and %q (%s) use the same database %q on the same server but ask for different versions (%s and %s): one would migrate the schema the other runs on. Give them the same package and version (or channel), or each a db_name of its own.",
						m.ID, o.ID, rangeString(o.DeclRange), m.Shown("db_name", m.DBName), m.Shown("version", m.Package+" "+m.Version), o.Shown("version", o.Package+" "+o.Version))
				}
			} else {
				dbOwner[key] = rm
			}
		}
		if n := environmentSize(fl, m); n > MaxEnvironment {
			d.errorf(at, "Environment too large", "Merchant %q's environment (env with PORT, MERCHANT and DATABASE_URL) takes %s; steward refuses more than %s so that the process can be started within the kernel's ARG_MAX (2 MiB with the usual stack limit, for arguments and environment together). Pass large data in a file instead.",
				m.ID, FormatSize(int64(n)), FormatSize(MaxEnvironment))
		}
		// Routes.
		for _, dom := range m.Domains {
			if other, ok := domainOwner[dom]; ok && other != rm {
				d.errorf(rm.domainAt[dom], "Domain clash", "Merchant %q lists domain %q, which merchant %q already has (%s); a domain routes to one merchant.", m.ID, dom, other.m.ID, rangeString(other.domainAt[dom]))
				continue
			}
			domainOwner[dom] = rm
		}
		if p := m.PathPrefix; p != "" {
			if other, ok := prefixOwner[p]; ok {
				d.errorf(rm.prefixAttr.Expr.Range(), "Path prefix clash", "Merchant %q has path_prefix %q, which merchant %q already has (%s); a path prefix routes to one merchant.", m.ID, p, other.m.ID, rangeString(other.prefixAttr.Expr.Range()))
			} else {
				prefixOwner[p] = rm
			}
		}
		// Ports.
		port := m.Shown("port", strconv.Itoa(m.Port)) // the value as written may differ ("08101")
		if owner, ok := opts.ReservedPorts[m.Port]; ok && m.Port != 0 {
			d.errorf(attrRange(rm.portAttr), "Port reserved", "Merchant %q asks for port %s, which steward itself listens on (%s in the host config); choose another port, or remove port to have one assigned.", m.ID, port, owner)
		}
		if m.Port != 0 {
			if opts.Ports.High != 0 && !opts.Ports.Contains(m.Port) {
				d.errorf(attrRange(rm.portAttr), "Port outside the runtime range", "Merchant %q asks for port %s, outside the runtime port range %s of the host config; choose a port inside it or widen runtime.ports.", m.ID, port, opts.Ports)
			}
			if other, ok := portOwner[m.Port]; ok {
				d.errorf(attrRange(rm.portAttr), "Port clash", "Merchant %q asks for port %s, which merchant %q already uses (%s); every merchant needs its own port. Remove port to have one assigned.", m.ID, port, other.m.ID, rangeString(attrRange(other.portAttr)))
			} else {
				portOwner[m.Port] = rm
			}
		}
	}
	if fixed := len(portOwner); opts.Ports.High != 0 {
		free := opts.Ports.High - opts.Ports.Low + 1 - fixed
		for p := range opts.ReservedPorts {
			if _, taken := portOwner[p]; opts.Ports.Contains(p) && !taken {
				free--
			}
		}
		if need := len(fl.Merchants) - fixed; need > free {
			d.diags = append(d.diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Not enough ports",
				Detail: fmt.Sprintf("%d merchants need an assigned port but the runtime range %s has only %d free; widen runtime.ports.", need, opts.Ports, free)})
		}
	}
}

// environmentSize is what merchant m's process environment takes in
// execve: every "NAME=value" string with its NUL and its pointer. PORT is
// counted at its longest.
func environmentSize(fl *Fleet, m *Merchant) int {
	const ptr = 8
	n := len("PORT=65535") + 1 + ptr + len("MERCHANT=") + len(m.ID) + 1 + ptr
	if db := fl.Databases[m.Database]; db != nil {
		n += len("DATABASE_URL=") + len(dsn.WithDatabase(db.DSN.Reveal(), m.DBName)) + 1 + ptr
	}
	for k, v := range m.Env {
		n += len(k) + 1 + len(v.Value.Reveal()) + 1 + ptr
	}
	return n
}

func lessRange(a, b hcl.Range) bool {
	if a.Filename != b.Filename {
		return a.Filename < b.Filename
	}
	return a.Start.Byte < b.Start.Byte
}
