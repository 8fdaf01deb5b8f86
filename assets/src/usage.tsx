// Usage and cost: tokens and US dollars per day, stacked by model, environment or node
// (Chart.js, loaded with the page), and the totals behind the chart.

import { useEffect, useRef, useState } from 'preact/hooks';
import { api } from './api';
import type * as P from './protocol.gen';
import { errorText, nodeName, useStore } from './store';
import { Empty, ErrorBox } from './ui';

type Group = 'model' | 'environment' | 'node';
type Metric = 'tokens' | 'cost';

/** Series past this many are summed as "other". */
const SERIES = 8;
const COLORS = ['#3b5bdb', '#2b8a3e', '#e8590c', '#9c36b5', '#0b7285', '#c92a2a', '#5c940d', '#862e9c', '#868e96'];

const value = (u: P.UsageTotal, m: Metric) => (m === 'cost' ? u.costUsd : u.inputTokens + u.outputTokens);

function days(from: string, to: string): string[] {
  const out = [];
  const end = new Date(to).getTime();
  for (let t = Date.parse(from.slice(0, 10)); t < end; t += 86_400_000) out.push(new Date(t).toISOString().slice(0, 10));
  return out;
}

export function UsagePage() {
  const s = useStore();
  const [range, setRange] = useState(30);
  const [group, setGroup] = useState<Group>('model');
  const [metric, setMetric] = useState<Metric>('tokens');
  const [report, setReport] = useState<P.UsageReport | null>(null);
  const [error, setError] = useState<string | null>(null);
  const canvas = useRef<HTMLCanvasElement>(null);
  const chart = useRef<{ destroy(): void } | null>(null);

  useEffect(() => {
    const to = new Date();
    const from = new Date(Date.UTC(to.getUTCFullYear(), to.getUTCMonth(), to.getUTCDate() - range + 1));
    api.usage(from.toISOString(), to.toISOString()).then(
      (r) => (setReport(r), setError(null)),
      (e) => setError(errorText(e)),
    );
  }, [range, s.taskTick]);

  const label = (key: string | null | undefined) => {
    if (!key) return group === 'model' ? 'unknown model' : 'none';
    if (group === 'node') return nodeName(s, key);
    if (group === 'environment') return s.environments.find((e) => e.id === key)?.name ?? key;
    return key;
  };
  const keyOf = (d: P.UsageDaily) => (group === 'model' ? d.model : group === 'node' ? d.nodeId : d.environmentId) ?? null;
  const rows = report ? (group === 'model' ? report.byModel : group === 'node' ? report.byNode : report.byEnvironment) : [];

  useEffect(() => {
    if (!report || !canvas.current) return;
    let cancelled = false;
    const top = [...rows].sort((a, b) => value(b, metric) - value(a, metric)).slice(0, SERIES).map((r) => r.key ?? null);
    const labels = days(report.from, report.to);
    const series = new Map<string | null, number[]>();
    for (const k of top) series.set(k, labels.map(() => 0));
    let other: number[] | null = null;
    for (const d of report.daily) {
      const i = labels.indexOf(d.day);
      if (i < 0) continue;
      const k = keyOf(d);
      let row = series.get(k);
      if (!row) row = other ??= labels.map(() => 0);
      row[i] += value(d, metric);
    }
    const datasets = [...series.entries()].map(([k, data], i) => ({ label: label(k), data, backgroundColor: COLORS[i % COLORS.length] }));
    if (other) datasets.push({ label: 'other', data: other, backgroundColor: COLORS[COLORS.length - 1] });
    import('chart.js').then(({ Chart, BarController, BarElement, CategoryScale, LinearScale, Legend, Tooltip }) => {
      if (cancelled || !canvas.current) return;
      Chart.register(BarController, BarElement, CategoryScale, LinearScale, Legend, Tooltip);
      chart.current?.destroy();
      chart.current = new Chart(canvas.current, {
        type: 'bar',
        data: { labels, datasets },
        options: {
          animation: false,
          maintainAspectRatio: false,
          scales: {
            x: { stacked: true },
            y: { stacked: true, beginAtZero: true, title: { display: true, text: metric === 'cost' ? 'US dollars' : 'tokens' } },
          },
          plugins: { legend: { position: 'bottom' } },
        },
      });
    });
    return () => {
      cancelled = true;
    };
  }, [report, group, metric, s.nodes, s.environments]);
  useEffect(() => () => chart.current?.destroy(), []);

  const money = (v: number) => `$${v.toFixed(v < 1 ? 4 : 2)}`;
  return (
    <div class="page usage-page">
      <header class="page-head">
        <h1>Usage</h1>
      </header>
      <div class="inline-form usage-controls">
        <label>
          Range
          <select value={range} onChange={(e) => setRange(Number((e.target as HTMLSelectElement).value))}>
            <option value={7}>7 days</option>
            <option value={30}>30 days</option>
            <option value={90}>90 days</option>
          </select>
        </label>
        <label>
          By
          <select value={group} onChange={(e) => setGroup((e.target as HTMLSelectElement).value as Group)}>
            <option value="model">model</option>
            <option value="environment">environment</option>
            <option value="node">node</option>
          </select>
        </label>
        <label>
          Show
          <select value={metric} onChange={(e) => setMetric((e.target as HTMLSelectElement).value as Metric)}>
            <option value="tokens">tokens</option>
            <option value="cost">cost</option>
          </select>
        </label>
      </div>
      <ErrorBox message={error} />
      {report && report.total.tasks === 0 && <Empty title="No agent usage in this range" />}
      <section class="card" hidden={!report || report.total.tasks === 0}>
        <div class="usage-chart">
          <canvas ref={canvas} aria-label={`${metric} per day by ${group}`} role="img" />
        </div>
      </section>
      {report && report.total.tasks > 0 && (
        <section class="card">
          <table class="usage" data-usage>
            <thead>
              <tr>
                <th>{group}</th>
                <th>tasks</th>
                <th>input tokens</th>
                <th>output tokens</th>
                <th>cost</th>
              </tr>
            </thead>
            <tbody>
              {[...rows.map((r) => ({ name: label(r.key), u: r as P.UsageTotal })), { name: 'total', u: report.total }].map(({ name, u }) => (
                <tr key={name} data-usage-row={name}>
                  <td>{name}</td>
                  <td>{u.tasks}</td>
                  <td>{u.inputTokens.toLocaleString()}</td>
                  <td>{u.outputTokens.toLocaleString()}</td>
                  <td data-cost>
                    {money(u.costUsd)}
                    {u.estimatedCostUsd > 0 && <span class="muted-text small"> ({money(u.estimatedCostUsd)} from prices)</span>}
                    {u.unpricedTokens > 0 && <span class="muted-text small"> + {u.unpricedTokens.toLocaleString()} tokens unpriced</span>}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
          {report.total.unpricedTokens > 0 && (
            <p class="muted-text">
              Unpriced tokens: their agent reported no cost and their model is not in the gateway's price table ({report.pricedModels}{' '}
              models; <code>prices.json</code> in the data dir or <code>--prices</code>).
            </p>
          )}
        </section>
      )}
    </div>
  );
}
