using System.CommandLine;
using System.IO.Compression;
using Bursar.Core.Import;
using Bursar.Core.Reporting;

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
            var store = CliOptions.OpenStore(pr);
            var catalog = Bursar.Gateway.Hosting.GatewayHost.LoadCatalog(store, new Bursar.Gateway.Hosting.BursarOptions());
            await using var stream = path.OpenRead();
            using var reader = new StreamReader(path.Name.EndsWith(".gz", StringComparison.OrdinalIgnoreCase) ? new GZipStream(stream, CompressionMode.Decompress) : stream);
            var result = CallLogImporter.Read(reader, fmt, catalog, new CallLogImportOptions { InputExcludesCached = pr.GetValue(excludes), Tags = extra });
            var before = await store.CountAsync(ct);
            if (!pr.GetValue(dryRun))
                foreach (var chunk in result.Records.Chunk(5000))
                {
                    await store.WriteAsync(chunk, ct);
                    Console.Error.Write($"\rimported {chunk.Length} more rows...");
                }
            var added = pr.GetValue(dryRun) ? 0 : await store.CountAsync(ct) - before;
            Console.Error.WriteLine();
            Console.WriteLine($"Read {result.Records.Count + result.Skipped.Count:N0} rows from {path.Name}: {result.Records.Count:N0} priced and {(pr.GetValue(dryRun) ? "not written (dry run)" : $"{added:N0} new in the ledger ({result.Records.Count - added:N0} already there)")}.");
            Console.WriteLine($"Catalog cost {SpendReport.Money(result.CatalogCost)}; the log's own cost column {SpendReport.Money(result.ReportedCost)}.");
            Print("Skipped (fix these rows and import again)", result.Skipped);
            Print("Cost disagrees with the catalog (the ledger keeps the catalog's)", result.CostMismatches);
            Print("UNPRICED: cost unknown, not $0", result.Unpriced);
            return result.Records.Count == 0 && result.Skipped.Count > 0 ? 1 : 0;
        });
        return cmd;
    }

    private static void Print(string title, IReadOnlyList<ImportProblem> problems)
    {
        if (problems.Count == 0) return;
        Console.WriteLine($"{title}: {problems.Count:N0} rows");
        foreach (var p in problems.Take(10)) Console.WriteLine($"  line {p.Line}: {p.Message}");
        if (problems.Count > 10) Console.WriteLine($"  ... and {problems.Count - 10:N0} more");
    }
}
