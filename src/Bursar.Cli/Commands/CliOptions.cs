using System.CommandLine;
using Bursar.Storage.Sqlite;

namespace Bursar.Cli.Commands;

internal static class CliOptions
{
    public static readonly Option<string> DataDir = new("--data-dir")
    {
        Description = "Folder holding bursar.db (ledger, keys, imported prices) and the ledger spool",
        DefaultValueFactory = _ => Environment.GetEnvironmentVariable("BURSAR_DATA_DIR") ?? ".bursar",
        Recursive = true,
    };

    public static SqliteStore OpenStore(ParseResult pr) => new(Path.Combine(pr.GetValue(DataDir)!, "bursar.db"));

    /// <summary>Configuration arguments for the gateway host from the CLI's options.</summary>
    public static string[] HostArgs(ParseResult pr, string urls, IEnumerable<string>? extra = null) =>
        [$"--urls={urls}", $"--Bursar:DataDirectory={pr.GetValue(DataDir)}", .. extra ?? []];
}
