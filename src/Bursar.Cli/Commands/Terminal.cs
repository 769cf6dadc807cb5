using Bursar.Core.Reporting;
using Spectre.Console;

namespace Bursar.Cli.Commands;

/// <summary>A table column: its header and whether its cells align right (numbers) or left (names).</summary>
internal readonly record struct Col(string Header, bool Right)
{
    public static Col L(string header) => new(header, false);
    public static Col R(string header) => new(header, true);
}

/// <summary>
/// The CLI's terminal output: Spectre.Console tables (rounded borders on a terminal, ASCII ones in a pipe or file, never wrapped
/// there) and progress. Cells and headers are Spectre markup, so everything that came from users (tags, names, ids, model
/// names) goes through <see cref="Safe"/>: control characters become visible escapes (<see cref="TerminalText"/>) and markup
/// brackets are escaped (<see cref="Markup.Escape"/>), so a tag like <c>[red]</c> prints as itself. CSV and JSON never pass here.
/// </summary>
internal static class Terminal
{
    private static readonly Lazy<IAnsiConsole> Console = new(Create);
    private static readonly Lazy<IAnsiConsole> Error = new(() => AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(System.Console.Error) }));

    public static IAnsiConsole Out => Console.Value;

    /// <summary>stderr, where progress goes when the command's result is on stdout (<c>import</c>).</summary>
    public static IAnsiConsole Err => Error.Value;

    /// <summary>True when stdout is a pipe or a file: no colours, no live progress, ASCII borders.</summary>
    public static bool Redirected => System.Console.IsOutputRedirected;

    private static IAnsiConsole Create()
    {
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(System.Console.Out) });
        // a pipe has no width: Spectre would squeeze tables into 80 columns; there a row stays on one line
        if (Redirected) console.Profile.Width = 1000;
        return console;
    }

    /// <summary>Text that came from users, as markup that prints exactly that text (control characters escaped visibly).</summary>
    public static string Safe(string? text) => Markup.Escape(TerminalText.Escape(text));

    public static Table NewTable(params Col[] columns)
    {
        var table = new Table { Border = Redirected ? TableBorder.Ascii : TableBorder.Rounded };
        foreach (var c in columns)
        {
            var column = new TableColumn(Markup.Escape(c.Header));
            if (c.Right) column.RightAligned();
            table.AddColumn(column);
        }
        return table;
    }

    /// <summary>Sets the footer row (totals) of a table made by <see cref="NewTable"/>; cells are markup, as in rows.</summary>
    public static Table Footer(this Table table, params string[] cells)
    {
        for (var i = 0; i < cells.Length && i < table.Columns.Count; i++) table.Columns[i].Footer(new Markup(cells[i]));
        table.ShowFooters = true;
        return table;
    }

    public static void Write(Table table) => Out.Write(table);

    /// <summary>A plain line (never read as markup).</summary>
    public static void Line(string text = "") => Out.WriteLine(text);
}
