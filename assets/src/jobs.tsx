// An environment's scheduled jobs: a goal it runs on a cron schedule, in a new thread each
// time or in one reused thread; last and next run, run now, on/off, delete.

import { useEffect, useState } from 'preact/hooks';
import { api, type Job } from './api';
import { EXECUTORS } from './executors';
import { errorText, navigate, toast, useStore } from './store';
import { ErrorBox, Pill, RelTime } from './ui';

const localZone = (() => {
  try {
    return Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
  } catch {
    return 'UTC';
  }
})();

function LastRun({ job }: { job: Job }) {
  const r = job.lastRun;
  if (!r) return <span class="muted-text">never</span>;
  return (
    <span data-last-run>
      <RelTime iso={r.at} /> {r.trigger !== 'schedule' && <span class="badge">{r.trigger}</span>}{' '}
      {r.state ? <Pill status={r.state} /> : <Pill status="error" label="not run" />}
      {r.threadId && (
        <>
          {' '}
          <a href={`/threads/${r.threadId}`} onClick={(e) => (e.preventDefault(), navigate(`/threads/${r.threadId}`))}>
            thread
          </a>
        </>
      )}
      {r.error && <div class="muted-text small">{r.error}</div>}
    </span>
  );
}

function AddJob({ envId, onAdded }: { envId: string; onAdded: () => void }) {
  const [name, setName] = useState('');
  const [schedule, setSchedule] = useState('0 9 * * 1-5');
  const [timezone, setTimezone] = useState(localZone);
  const [goal, setGoal] = useState('');
  const [executor, setExecutor] = useState('');
  const [reuse, setReuse] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const add = async () => {
    setError(null);
    try {
      await api.createJob(envId, {
        name: name.trim() || undefined,
        schedule,
        timezone,
        goal,
        executor: executor || undefined,
        thread: reuse ? 'reuse' : 'new',
      });
      setName('');
      setGoal('');
      onAdded();
    } catch (e) {
      setError(errorText(e));
    }
  };
  return (
    <form
      class="job-form"
      onSubmit={(e) => {
        e.preventDefault();
        add();
      }}
    >
      <div class="inline-form">
        <label>
          Job name
          <input value={name} placeholder="nightly deps" onInput={(e) => setName((e.target as HTMLInputElement).value)} />
        </label>
        <label>
          Schedule (cron)
          <input value={schedule} required onInput={(e) => setSchedule((e.target as HTMLInputElement).value)} />
        </label>
        <label>
          Time zone
          <input value={timezone} required onInput={(e) => setTimezone((e.target as HTMLInputElement).value)} />
        </label>
        <label>
          Executor
          <select value={executor} onChange={(e) => setExecutor((e.target as HTMLSelectElement).value)}>
            <option value="">environment default</option>
            {EXECUTORS.map((x) => (
              <option key={x.value} value={x.value}>
                {x.label}
              </option>
            ))}
          </select>
        </label>
      </div>
      <label>
        Goal
        <textarea rows={2} value={goal} required placeholder="Update the dependencies and open a pull request" onInput={(e) => setGoal((e.target as HTMLTextAreaElement).value)} />
      </label>
      <label class="check">
        <input type="checkbox" checked={reuse} onChange={(e) => setReuse((e.target as HTMLInputElement).checked)} /> Continue one thread
        on every run (instead of a new thread each time)
      </label>
      <ErrorBox message={error} />
      <button class="primary" type="submit">
        Add job
      </button>
    </form>
  );
}

export function JobsSection({ envId }: { envId: string }) {
  const s = useStore();
  const env = s.environments.find((e) => e.id === envId || e.name === envId);
  const [jobs, setJobs] = useState<Job[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const load = () =>
    env &&
    api.jobs(env.id).then(
      (j) => (setJobs(j), setError(null)),
      (e) => setError(errorText(e)),
    );
  useEffect(() => {
    load();
  }, [env?.id, s.jobTick]);
  if (!env) return null;
  const act = async (what: string, f: () => Promise<unknown>) => {
    try {
      await f();
      load();
    } catch (e) {
      toast(`${what}: ${errorText(e)}`);
    }
  };
  return (
    <section class="page jobs-page">
      <section class="card" data-jobs>
        <h2>Scheduled jobs</h2>
        <p class="muted-text">
          Goals this environment runs on a schedule (standard cron: minute hour day month weekday). A run missed while the
          gateway was down runs once when it is back, within an hour.
        </p>
        <ErrorBox message={error} />
        {jobs && jobs.length > 0 && (
          <table class="jobs">
            <thead>
              <tr>
                <th>Name</th>
                <th>Schedule</th>
                <th>Next run</th>
                <th>Last run</th>
                <th />
              </tr>
            </thead>
            <tbody>
              {jobs.map((j) => (
                <tr key={j.id} data-job={j.id}>
                  <td>
                    <strong>{j.name}</strong>
                    <div class="muted-text small">
                      {j.thread === 'reuse' ? 'one thread' : 'new thread each run'}
                      {j.executor ? ` · ${j.executor}` : ''}
                    </div>
                  </td>
                  <td>
                    <code>{j.schedule}</code> <span class="muted-text small">{j.timezone}</span>
                  </td>
                  <td data-next-run>{j.enabled && j.nextRunAt ? <RelTime iso={j.nextRunAt} /> : <span class="muted-text">off</span>}</td>
                  <td>
                    <LastRun job={j} />
                  </td>
                  <td class="actions">
                    <div>
                      <label class="check" title="Run on schedule">
                        <input type="checkbox" checked={j.enabled} onChange={() => act('Switch', () => api.updateJob(j.id, { enabled: !j.enabled }))} /> on
                      </label>
                      <button class="small" onClick={() => act('Run now', () => api.runJob(j.id))}>
                        Run now
                      </button>
                      <button
                        class="small danger"
                        onClick={() => confirm(`Delete job ${j.name}? Its threads stay.`) && act('Delete', () => api.deleteJob(j.id))}
                      >
                        Delete
                      </button>
                    </div>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
        {jobs && jobs.length === 0 && <p class="muted-text">No jobs yet.</p>}
        <AddJob envId={env.id} onAdded={load} />
      </section>
    </section>
  );
}
