using System.CommandLine;
using System.Globalization;
using Bursar.Core.Batch;
using Bursar.Core.Ledger;
using Bursar.Core.Pricing;
using Bursar.Core.Reporting;
using Bursar.Core.Storage;
using Spectre.Console;

namespace Bursar.Cli.Commands;

/// <summary><c>bursar batches list|show|report</c> and <c>bursar jobs list|show|cancel</c>: the batch lever's state, read from the store.</summary>
internal static class BatchesCommand
{
    private static string Money(decimal d) => "$" + d.ToString("0.######", CultureInfo.InvariantCulture);

    private static string When(DateTimeOffset t) => t.UtcDateTime.ToString("yyyy-MM-dd HH:mm:ss'Z'", CultureInfo.InvariantCulture);

    private static T Store<T>(IBursarStore store) where T : class =>
        store as T ?? throw new CliException($"The store at {store.Location} keeps no batches or jobs (the batch lever's state lives in the SQLite store).");

    public static Command CreateBatches()
    {
        var batches = new Command("batches", "Provider batches passed through the gateway or made of deferred jobs, and what their lines cost");
        var limit = new Option<int>("--limit") { Description = "At most this many, newest first", DefaultValueFactory = _ => 50 };
        var list = new Command("list", "Batches, newest first: who holds them, how far Bursar got, their worst case at the batch rate") { limit };
        list.SetAction(async (pr, ct) =>
        {
            var all = await Store<IBatchStore>(CliOptions.OpenStore(pr)).ListBatchesAsync(null, null, Math.Clamp(pr.GetValue(limit), 1, 100_000), ct);
            if (all.Count == 0)
            {
                Terminal.Line("No batches yet (POST /v1/batches, /v1/messages/batches, or calls sent with x-bursar-defer).");
                return 0;
            }
            var table = Terminal.NewTable(Col.L("id"), Col.L("dialect"), Col.L("deployment"), Col.L("state"), Col.R("lines"), Col.R("worst case"), Col.L("created"), Col.L("kind"));
            foreach (var b in all)
                table.AddRow(Terminal.Safe(b.Id), b.Dialect, Terminal.Safe(b.Deployment), (b.Collected ? "collected" : b.Phase.ToString().ToLowerInvariant()),
                    b.Lines.ToString("N0", CultureInfo.InvariantCulture), Money(b.WorstUsd), When(b.CreatedAt), b.Jobs ? "deferred jobs" : "pass-through");
            Terminal.Write(table);
            return 0;
        });
        var id = new Argument<string>("id") { Description = "Bursar's batch id (batch_bsr…, msgbatch_bsr…)" };
        var show = new Command("show", "One batch: its provider id, state, and its lines on the ledger by outcome") { id };
        show.SetAction(async (pr, ct) =>
        {
            var store = CliOptions.OpenStore(pr);
            var b = await Store<IBatchStore>(store).FindBatchAsync(pr.GetValue(id)!, ct);
            if (b is null)
            {
                await Console.Error.WriteLineAsync($"batches show: no batch has the id '{TerminalText.Escape(pr.GetValue(id))}' (see bursar batches list)");
                return 1;
            }
            Terminal.Line($"batch {TerminalText.Escape(b.Id)} ({(b.Jobs ? "deferred jobs" : "pass-through")}, {b.Dialect})");
            Terminal.Line($"  deployment {TerminalText.Escape(b.Deployment)}, provider id {TerminalText.Escape(b.UpstreamId ?? "(not recorded)")}");
            Terminal.Line($"  state {(b.Collected ? "collected" : b.Phase.ToString().ToLowerInvariant())}, {b.Lines:N0} lines, worst case {Money(b.WorstUsd)} at the batch rate, created {When(b.CreatedAt)}");
            if (b.Error is not null) Terminal.Line($"  error: {TerminalText.Escape(b.Error)}");
            var rows = (await store.ReadAsync(new LedgerQuery { From = b.CreatedAt.AddMinutes(-1), Limit = 10_000_000 }, ct)).Where(r => r.BatchId == b.Id).ToArray();
            var table = Terminal.NewTable(Col.L("outcome"), Col.R("lines"), Col.R("cost"), Col.R("batch saving"));
            foreach (var g in rows.GroupBy(r => r.Outcome).OrderBy(g => g.Key, StringComparer.Ordinal))
                table.AddRow(Terminal.Safe(g.Key), g.Count().ToString("N0", CultureInfo.InvariantCulture), Money(g.Sum(r => r.Cost ?? 0)), Money(g.Sum(r => r.SavingBatch)));
            table.Footer("TOTAL", rows.Length.ToString("N0", CultureInfo.InvariantCulture), Money(rows.Sum(r => r.Cost ?? 0)), Money(rows.Sum(r => r.SavingBatch)));
            Terminal.Write(table);
            return 0;
        });
        var days = new Option<int>("--days") { Description = "The last this many days", DefaultValueFactory = _ => 30 };
        var report = new Command("report", "The batch share per route: calls, calls at the batch rate, their share, and the saving credited to the batch lever") { days };
        report.SetAction(async (pr, ct) =>
        {
            var from = TimeProvider.System.GetUtcNow().AddDays(-Math.Clamp(pr.GetValue(days), 1, 3650));
            var rows = await CliOptions.OpenStore(pr).ReadAsync(new LedgerQuery { From = from, Limit = 10_000_000 }, ct);
            var table = Terminal.NewTable(Col.L("route"), Col.R("calls"), Col.R("batch calls"), Col.R("batch share"), Col.R("cost"), Col.R("batch saving"));
            foreach (var g in rows.GroupBy(r => r.Route ?? "(no route)").OrderByDescending(g => g.Sum(r => r.Cost ?? 0)))
            {
                var batch = g.Count(r => r.Batch);
                table.AddRow(Terminal.Safe(g.Key), g.Count().ToString("N0", CultureInfo.InvariantCulture), batch.ToString("N0", CultureInfo.InvariantCulture),
                    ((double)batch / g.Count()).ToString("P1", CultureInfo.InvariantCulture), Money(g.Sum(r => r.Cost ?? 0)), Money(g.Sum(r => r.SavingBatch)));
            }
            var all = rows.Count;
            var inBatch = rows.Count(r => r.Batch);
            table.Footer("TOTAL", all.ToString("N0", CultureInfo.InvariantCulture), inBatch.ToString("N0", CultureInfo.InvariantCulture),
                (all == 0 ? 0 : (double)inBatch / all).ToString("P1", CultureInfo.InvariantCulture), Money(rows.Sum(r => r.Cost ?? 0)), Money(rows.Sum(r => r.SavingBatch)));
            Terminal.Write(table);
            return 0;
        });
        batches.Subcommands.Add(list);
        batches.Subcommands.Add(show);
        batches.Subcommands.Add(report);
        return batches;
    }

    public static Command CreateJobs()
    {
        var jobs = new Command("jobs", "Deferred calls (x-bursar-defer, a route's Defer): queued, sent in a batch, done or failed");
        var state = new Option<string?>("--state") { Description = "Only jobs in this state: queued, submitted, done, failed, canceled" };
        var limit = new Option<int>("--limit") { Description = "At most this many, newest first", DefaultValueFactory = _ => 50 };
        var list = new Command("list", "Deferred jobs, newest first") { state, limit };
        list.SetAction(async (pr, ct) =>
        {
            JobState? only = null;
            if (pr.GetValue(state) is { } s)
            {
                if (!Enum.TryParse<JobState>(s, ignoreCase: true, out var parsed) || int.TryParse(s, out _))
                {
                    await Console.Error.WriteLineAsync($"jobs list: --state '{TerminalText.Escape(s)}' is not one of queued, submitted, done, failed, canceled");
                    return 2;
                }
                only = parsed;
            }
            var all = await Store<IJobStore>(CliOptions.OpenStore(pr)).ListJobsAsync(only, Math.Clamp(pr.GetValue(limit), 1, 100_000), ct);
            if (all.Count == 0)
            {
                Terminal.Line("No deferred jobs" + (only is null ? "" : $" {only.ToString()!.ToLowerInvariant()}") + ".");
                return 0;
            }
            var table = Terminal.NewTable(Col.L("id"), Col.L("state"), Col.L("feature"), Col.L("model"), Col.L("created"), Col.L("deadline"), Col.L("batch"));
            foreach (var j in all)
                table.AddRow(Terminal.Safe(j.Id), j.State.ToString().ToLowerInvariant(), Terminal.Safe(j.Feature ?? ""), Terminal.Safe(j.Model), When(j.CreatedAt), When(j.Deadline), Terminal.Safe(j.BatchId ?? ""));
            Terminal.Write(table);
            return 0;
        });
        var id = new Argument<string>("id") { Description = "The job's id (job_…), as the 202's Location names it" };
        var show = new Command("show", "One job: who sent it, where it is, and its ledger row") { id };
        show.SetAction(async (pr, ct) =>
        {
            var store = CliOptions.OpenStore(pr);
            var j = await Store<IJobStore>(store).FindJobAsync(pr.GetValue(id)!, ct);
            if (j is null)
            {
                await Console.Error.WriteLineAsync($"jobs show: no job has the id '{TerminalText.Escape(pr.GetValue(id))}' (see bursar jobs list)");
                return 1;
            }
            Terminal.Line($"job {TerminalText.Escape(j.Id)}: {j.State.ToString().ToLowerInvariant()}");
            Terminal.Line($"  key {TerminalText.Escape(j.KeyId)}, feature {TerminalText.Escape(j.Feature ?? "-")}, team {TerminalText.Escape(j.Team ?? "-")}, customer {TerminalText.Escape(j.Customer ?? "-")}, route {TerminalText.Escape(j.Route ?? "-")}");
            Terminal.Line($"  {j.Dialect} call to {TerminalText.Escape(j.Model)} on {TerminalText.Escape(j.Deployment)}, created {When(j.CreatedAt)}, deadline {When(j.Deadline)}");
            if (j.BatchId is not null) Terminal.Line($"  batch {TerminalText.Escape(j.BatchId)}");
            if (j.State is JobState.Done or JobState.Failed) Terminal.Line($"  answer: HTTP {j.StatusCode}, {j.Result?.Length ?? 0:N0} bytes");
            if (j.Error is not null) Terminal.Line($"  error: {TerminalText.Escape(j.Error)}");
            var row = (await store.ReadAsync(new LedgerQuery { From = j.CreatedAt.AddMinutes(-1), Limit = 10_000_000 }, ct)).FirstOrDefault(r => r.Id == j.RecordId);
            Terminal.Line(row is null ? "  ledger: no row yet (written when its answer arrives)"
                : $"  ledger: {row.Outcome}, {(row.Batch ? "batch rate" : "standard rate")}, cost {Money(row.Cost ?? 0)}, batch saving {Money(row.SavingBatch)}");
            return 0;
        });
        var cancel = new Command("cancel", "Cancels a job still queued (not yet sent in a batch): its caller gets 409, its ledger row is $0, canceled") { id };
        cancel.SetAction(async (pr, ct) =>
        {
            var store = CliOptions.OpenStore(pr);
            var jobStore = Store<IJobStore>(store);
            var j = await jobStore.FindJobAsync(pr.GetValue(id)!, ct);
            if (j is null)
            {
                await Console.Error.WriteLineAsync($"jobs cancel: no job has the id '{TerminalText.Escape(pr.GetValue(id))}' (see bursar jobs list)");
                return 1;
            }
            if (j.State != JobState.Queued)
            {
                await Console.Error.WriteLineAsync($"jobs cancel: job {TerminalText.Escape(j.Id)} is {j.State.ToString().ToLowerInvariant()}" + (j.BatchId is null ? "" : $" (in batch {TerminalText.Escape(j.BatchId)})") + ": only a queued job can be canceled");
                return 1;
            }
            var now = TimeProvider.System.GetUtcNow();
            if (!await jobStore.FinishAsync(j.Id, JobState.Canceled, 409, null, "canceled with bursar jobs cancel before it was sent", now, ct))
            {
                await Console.Error.WriteLineAsync($"jobs cancel: job {TerminalText.Escape(j.Id)} was sent in a batch a moment ago: it was not canceled");
                return 1;
            }
            var line = new BatchLineResult { CustomId = j.Id, Outcome = "canceled", StatusCode = 409, ErrorType = "job_canceled", ErrorMessage = "canceled with bursar jobs cancel before it was sent" };
            await store.WriteAsync([JobLedger.Record(j, null, line, new PriceCatalog(PriceFiles.LoadBuiltIn()), now, j.Deployment, batchRate: false)], ct);
            Console.WriteLine($"job {TerminalText.Escape(j.Id)} canceled");
            return 0;
        });
        jobs.Subcommands.Add(list);
        jobs.Subcommands.Add(show);
        jobs.Subcommands.Add(cancel);
        return jobs;
    }
}
