using Bursar.Hosting;
using System.CommandLine;
using System.IO.Compression;
using Bursar.Core.Import;
using Bursar.Core.Reporting;
using Spectre.Console;

namespace Bursar.Cli.Commands;

internal static class ImportCommand
{
    public static Command Create()
    {
        var file = new Argument<FileInfo>("file") { Description = "A CSV (header row) or JSONL call log; .gz is read as gzip" };
        var format = new Option<string?>("--format") { Description = "csv or jsonl (default: from the file extension)" };
        var excludes = new Option<bool>("--input-excludes-cached") { Description = "The log's input tokens exclude cached tokens (Anthropic's shape); default: input includes them" };
        var tags = new Option<string[]>("--tag") { Description = "A tag added to every row, k=v (repeatable), e.g. --tag team=search", AllowMultipleArgumentsPerToken = true };
        var dryRun = new Option<bool>("--dry-run") { Description = "Read and price the file, print the summary, write nothing" };
        var cmd = new Command("import", "Import call logs that did not pass through Bursar into the ledger, priced from the catalog; rows whose own cost disagrees with the catalog are flagged")
            { file, format, excludes, tags, dryRun };
        cmd.SetAction(async (pr, ct) =>
        {
            var path = pr.GetValue(file)!;
            if (!path.Exists)
            {
                await Console.Error.WriteLineAsync($"import: no file at '{path.FullName}'");
                return 2;
            }
            var name = path.Name.EndsWith(".gz", StringComparison.OrdinalIgnoreCase) ? path.Name[..^3] : path.Name;
            var fmt = pr.GetValue(format) ?? (name.EndsWith(".jsonl", StringComparison.OrdinalIgnoreCase) || name.EndsWith(".ndjson", StringComparison.OrdinalIgnoreCase) ? "jsonl" : "csv");
            if (fmt is not ("csv" or "jsonl"))
            {
                await Console.Error.WriteLineAsync($"import: --format '{fmt}' is not csv or jsonl");
                return 2;
            }
            var extra = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
            foreach (var t in pr.GetValue(tags) ?? [])
            {
                var eq = t.IndexOf('=');
                if (eq <= 0)
                {
                    await Console.Error.WriteLineAsync($"import: --tag '{t}' is not k=v");
                    return 2;
                }
                extra[t[..eq]] = t[(eq + 1)..];
            }
            var store = CliOptions.OpenStore(pr, create: true);
            var catalog = Bursar.Hosting.BursarServices.LoadCatalog(store, new Bursar.Hosting.BursarOptions());
            await using var stream = path.OpenRead();
            using var reader = new StreamReader(path.Name.EndsWith(".gz", StringComparison.OrdinalIgnoreCase) ? new GZipStream(stream, CompressionMode.Decompress) : stream);
            var dry = pr.GetValue(dryRun);
            var before = await store.CountAsync(ct);
            var batch = new List<Bursar.Core.Ledger.LedgerRecord>(5000);
            var problems = new Dictionary<ImportItemKind, (int Count, List<ImportProblem> First)>();
            long read = 0, imported = 0;
            decimal catalogCost = 0, reportedCost = 0;
            ProgressTask? bar = null;
            async Task Flush()
            {
                if (!dry && batch.Count > 0) await store.WriteAsync(batch, ct);
                batch.Clear();
                if (bar is not null)
                {
                    bar.Value = stream.Position; // bytes of the file read (of the compressed file for .gz)
                    bar.Description = $"read {read:N0} rows";
                }
                else Console.Error.Write($"\rread {read:N0} rows...");
            }
            async Task ReadAll()
            {
                foreach (var item in CallLogImporter.Stream(reader, fmt, catalog, new CallLogImportOptions { InputExcludesCached = pr.GetValue(excludes), Tags = extra }))
                {
                    if (item.Kind == ImportItemKind.Record)
                    {
                        read++;
                        imported++;
                        catalogCost += item.Record!.Cost ?? 0;
                        reportedCost += item.Record.ReportedCost ?? 0;
                        batch.Add(item.Record);
                        if (batch.Count == 5000) await Flush();
                        continue;
                    }
                    if (item.Kind == ImportItemKind.Skipped) read++;
                    var (count, first) = problems.GetValueOrDefault(item.Kind, (0, new List<ImportProblem>()));
                    if (first.Count < 10) first.Add(item.Problem!);
                    problems[item.Kind] = (count + 1, first);
                }
                await Flush();
            }
            // a progress bar on a terminal (by bytes of the file read); in a pipe, a "read N rows..." line on stderr
            if (Console.IsErrorRedirected) await ReadAll();
            else
            {
                await Terminal.Err.Progress().AutoClear(true)
                    .Columns(new ProgressBarColumn(), new PercentageColumn(), new TaskDescriptionColumn { Alignment = Justify.Left })
                    .StartAsync(async ctx =>
                    {
                        bar = ctx.AddTask("reading", maxValue: Math.Max(1, stream.Length));
                        await ReadAll();
                        bar.Value = bar.MaxValue;
                    });
            }
            var added = dry ? 0 : await store.CountAsync(ct) - before;
            if (Console.IsErrorRedirected) Console.Error.WriteLine(); // ends the "read N rows..." line
            Console.WriteLine($"Read {read:N0} rows from {path.Name}: {imported:N0} read into ledger records, {(dry ? "not written (dry run)" : $"{added:N0} of them new in the ledger ({imported - added:N0} already there)")}.");
            Console.WriteLine($"Catalog cost {SpendReport.Money(catalogCost)}; the log's own cost column {SpendReport.Money(reportedCost)}.");
            Print("Skipped (fix these rows and import again)", problems.GetValueOrDefault(ImportItemKind.Skipped));
            Print("Cost disagrees with the catalog (the ledger keeps the catalog's)", problems.GetValueOrDefault(ImportItemKind.CostMismatch));
            Print("UNPRICED: cost unknown, not $0", problems.GetValueOrDefault(ImportItemKind.Unpriced));
            return imported == 0 && read > 0 ? 1 : 0;
        });
        return cmd;
    }

    private static void Print(string title, (int Count, List<ImportProblem>? First) problems)
    {
        if (problems.Count == 0 || problems.First is null) return;
        Console.WriteLine($"{title}: {problems.Count:N0} rows");
        foreach (var p in problems.First) Console.WriteLine($"  line {p.Line}: {TerminalText.Escape(p.Message)}"); // messages quote the file's values
        if (problems.Count > problems.First.Count) Console.WriteLine($"  ... and {problems.Count - problems.First.Count:N0} more");
    }
}
