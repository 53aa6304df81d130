package deploy

import (
	"encoding/json"
	"os"
	"testing"
)

const dashboardFile = "grafana/levee.json"

type dashboard struct {
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query string `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int         `json:"id"`
	Type       string      `json:"type"`
	Title      string      `json:"title"`
	GridPos    gridPos     `json:"gridPos"`
	Datasource *datasource `json:"datasource"`
	Targets    []struct {
		RefID      string      `json:"refId"`
		Expr       string      `json:"expr"`
		Datasource *datasource `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a collapsed row's panels
}

type gridPos struct{ H, W, X, Y int }

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// allPanels flattens rows.
func allPanels(ps []panel) []panel {
	var out []panel
	for _, p := range ps {
		out = append(out, p)
		out = append(out, allPanels(p.Panels)...)
	}
	return out
}

func TestGrafanaDashboard(t *testing.T) {
	l := leveeFacts(t)
	data, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	if d.UID == "" || d.Title == "" || d.SchemaVersion == 0 {
		t.Errorf("dashboard needs a uid, a title and a schemaVersion")
	}
	// One data source variable, so the dashboard imports into any Grafana.
	hasDS := false
	for _, v := range d.Templating.List {
		if v.Name == "datasource" && v.Type == "datasource" && v.Query == "prometheus" {
			hasDS = true
		}
	}
	if !hasDS {
		t.Error("no datasource variable of type prometheus")
	}

	used := map[string]bool{}
	ids := map[int]bool{}
	var placed []panel
	exprs := 0
	for _, p := range allPanels(d.Panels) {
		if ids[p.ID] || p.ID == 0 {
			t.Errorf("panel %q: id %d missing or reused", p.Title, p.ID)
		}
		ids[p.ID] = true
		if p.Title == "" {
			t.Errorf("panel %d has no title", p.ID)
		}
		g := p.GridPos
		if g.W <= 0 || g.H <= 0 || g.X < 0 || g.Y < 0 || g.X+g.W > 24 {
			t.Errorf("panel %q: gridPos %+v is off the 24-column grid", p.Title, g)
		}
		for _, q := range placed {
			o := q.GridPos
			if g.X < o.X+o.W && o.X < g.X+g.W && g.Y < o.Y+o.H && o.Y < g.Y+g.H {
				t.Errorf("panels %q and %q overlap", p.Title, q.Title)
			}
		}
		placed = append(placed, p)
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q: datasource must be the ${datasource} variable", p.Title)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if refs[tg.RefID] || tg.RefID == "" {
				t.Errorf("panel %q: refId %q missing or reused", p.Title, tg.RefID)
			}
			refs[tg.RefID] = true
			if tg.Datasource == nil || tg.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q query %s: datasource must be the ${datasource} variable", p.Title, tg.RefID)
			}
			exprs++
			_, names, err := checkExpr(l, tg.Expr)
			if err != nil {
				t.Errorf("panel %q query %s: %v\n  expr: %s", p.Title, tg.RefID, err, tg.Expr)
			}
			for _, n := range names {
				used[n] = true
			}
		}
	}
	if exprs == 0 {
		t.Fatal("the dashboard has no queries")
	}
	// Not a failure: a metric added to Levee need not break this module's
	// tests, but the dashboard should show it.
	for _, m := range sortedKeys(l.metrics) {
		shown := used[m] || used[m+"_bucket"] || used[m+"_sum"] || used[m+"_count"]
		if !shown {
			t.Logf("note: the dashboard does not show %s", m)
		}
	}
}
