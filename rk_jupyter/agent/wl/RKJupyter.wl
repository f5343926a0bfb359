(* ::Package:: *)

(* RKJupyter.wl -- what rk_jupyter's Wolfram engine evaluates notebook cells with.

   The engine sends EvaluatePacket[RKJupyter`Evaluate["cell text"]] (EvaluatePacket bypasses
   the kernel's main loop, which would format results for a terminal), so this package does the
   front end's bookkeeping itself and returns the result as data the engine turns into Jupyter
   MIME bundles.  Print and messages are not touched: they reach the engine as the kernel's own
   TextPacket/MessagePacket while the cell runs.

   Cells follow rk_jupyter's convention (the same as its Mathics3 engine): a cell is one input
   line n; its top-level expressions (a new line ends an expression that is complete, as in a
   notebook) are evaluated in order; In[n] is the cell, Out[n] its last expression's value; a
   syntax error anywhere evaluates nothing.  Each expression is parsed just before it runs, as
   a notebook does: parsing creates symbols in $Context, so a cell whose first line loads a
   package (Needs, Get, BeginPackage, a $ContextPath change) must not have its next line
   parsed before then, or that line's names would shadow the package's (::shdw).

   EvaluatePacket bypasses the kernel's main loop, so this package also does what the main
   loop does between inputs: $MessageList starts empty for each cell (otherwise General::stop
   silences a message for the rest of the session) and MessageList[n] keeps it; an uncaught
   Throw gives Throw::nocatch and Hold[Throw[...]] as at top level.

   Names are written in full (RKJupyter`Evaluate, not Evaluate) and the context is not put on
   $ContextPath, so that nothing here shadows System`Evaluate or a user's symbols. *)

RKJupyter`Evaluate::usage = "RKJupyter`Evaluate[code] evaluates the text of a cell like a " <>
    "notebook front end and returns <|\"line\" -> next line number, \"results\" -> " <>
    "{bundle...}|>, a bundle being <|\"line\" -> n, \"text/plain\" -> ..., ...|> (none when " <>
    "the value is Null), plus \"syntax\" -> position of the error (1-based) when the cell " <>
    "does not parse.";
RKJupyter`Complete::usage = "RKJupyter`Complete[prefix] gives the names of symbols that " <>
    "start with prefix.";
RKJupyter`Inspect::usage = "RKJupyter`Inspect[name] gives <|\"text/plain\" -> usage|> for " <>
    "the symbol name, or Null when it has no usage message.";
RKJupyter`Info::usage = "RKJupyter`Info[] describes the kernel.";

Begin["RKJupyter`Private`"];

$pageWidth = 100;
$maxText = 100000;   (* characters of text/plain before Short; the engine sets output_limit *)
$maxTeX = 20000;
$maxTeXLeaves = 5000;
$renderSeconds = 60;
$frontEnd = Automatic;  (* not probed yet; then True, or why no front end draws here *)

(* Print and message text as results are shown: on one line however long, and in Unicode (a
   kernel under LANG=C would otherwise print \[Alpha]). *)
If[ListQ[$Output] && ListQ[$Messages],
    Quiet[SetOptions[#, PageWidth -> Infinity, CharacterEncoding -> "Unicode"] & /@
        Join[$Output, $Messages]]];

(* What a front end would draw rather than print. *)
$pictures = _Graphics | _Graphics3D | _Image | _Image3D | _Graph | _Legended | _GeoGraphics |
    _Sound | _Audio | _Dataset | _Manipulate | _Dynamic | _DynamicModule;
(* Results whose text is the point: TeX would typeset the form, not the expression. *)
$textForms = _FullForm | _InputForm | _OutputForm | _TeXForm | _MathMLForm | _TreeForm;

RKJupyter`Evaluate[code_String] := Module[{line, chunks},
    If[!IntegerQ[$Line], $Line = 1];
    line = $Line;
    Unprotect[$MessageList]; $MessageList = {}; Protect[$MessageList];
    chunks = statements[code];
    Which[
        chunks === {}, <|"line" -> line, "results" -> {}|>,
        !SyntaxQ[Last[chunks][[2]]], syntaxError[line, Last[chunks]],
        True, run[line, chunks[[All, 2]]]
    ]
];

(* The cell's top-level expressions as {offset, text}: lines are joined until they parse (the
   last element does not parse when the cell has a syntax error); blank parts are dropped. *)
statements[code_String] := Module[{newlines, starts, ends, chunks = {}, acc = Null, start = 0},
    newlines = StringPosition[code, "\n"][[All, 1]];
    starts = Prepend[newlines + 1, 1];
    ends = Append[newlines - 1, StringLength[code]];
    Do[
        If[acc === Null,
            acc = StringTake[code, {starts[[i]], ends[[i]]}]; start = starts[[i]] - 1,
            acc = acc <> "\n" <> StringTake[code, {starts[[i]], ends[[i]]}]
        ];
        Which[
            StringTrim[acc] === "", acc = Null,
            SyntaxQ[acc], AppendTo[chunks, {start, acc}]; acc = Null
        ],
        {i, Length[starts]}
    ];
    If[acc =!= Null, AppendTo[chunks, {start, acc}]];
    chunks
];

(* The kernel's own syntax message, and where the error is. *)
syntaxError[line_, {offset_, text_}] := Module[{length = SyntaxLength[text]},
    ToExpression[text, InputForm, HoldComplete];
    If[!IntegerQ[length], length = StringLength[text]];
    <|"line" -> line, "results" -> {},
      "syntax" -> offset + Min[length, StringLength[text]] + 1|>
];

run[line_, texts_List] := Module[{value},
    value = CheckAbort[
        uncaught[Catch[Catch[evaluated[evaluateEach[line, texts]]], _, thrown]],
        setOut[line, $Aborted]; endLine[line]; Abort[]
    ];
    If[ValueQ[$Post], value = $Post[value]];
    setOut[line, value];
    endLine[line];
    <|"line" -> line + 1,
      "results" -> If[value === Null, {}, {Join[<|"line" -> line|>, bundle[value]]}]|>
];

(* Each expression is parsed when its turn comes; In[line] grows with what was parsed. *)
evaluateEach[line_, texts_List] := Module[{held = HoldComplete[], value = Null},
    Do[
        With[{next = parse[text]},
            held = Join[held, next];
            setIn[line, held];
            value = evaluateHeld[next]],
        {text, texts}];
    value
];

parse[text_String] := ToExpression[text, InputForm, HoldComplete];

(* What the main loop does for an uncaught Throw: the message, and the Throw held. *)
uncaught[evaluated[value_]] := value;
uncaught[thrown[value_, tag_]] := (Message[Throw::nocatch, HoldForm[Throw[value, tag]]];
    Hold[Throw[value, tag]]);
uncaught[value_] := (Message[Throw::nocatch, HoldForm[Throw[value]]]; Hold[Throw[value]]);

endLine[line_] := (
    Unprotect[MessageList]; MessageList[line] = $MessageList; Protect[MessageList];
    $Line = line + 1);

evaluateHeld[HoldComplete[es___]] :=
    If[ValueQ[$Pre], $Pre[CompoundExpression[es]], CompoundExpression[es]];

setIn[line_, HoldComplete[e_]] := (Unprotect[In]; In[line] := e; Protect[In]);
setIn[line_, HoldComplete[es__]] := (Unprotect[In]; In[line] := CompoundExpression[es];
    Protect[In]);

setOut[line_, value_] := (Unprotect[Out]; Out[line] = value; Protect[Out]);

(* The MIME bundle of a result: OutputForm text, plus a picture or TeX where they say more. *)
bundle[value_] := Module[{shown, text},
    shown = If[ValueQ[$PrePrint], $PrePrint[value], value];
    text = plainText[shown];
    Which[
        MatchQ[shown, $pictures], picture[shown, text],
        mathQ[shown] && FreeQ[shown, $pictures | $textForms], withTeX[shown, text],
        True, <|"text/plain" -> text|>
    ]
];

plainText[x_] := Module[{text = ToString[x, OutputForm, PageWidth -> $pageWidth,
        CharacterEncoding -> "Unicode"]},
    If[StringLength[text] <= $maxText, text,
        ToString[Short[x, 40], OutputForm, PageWidth -> $pageWidth,
            CharacterEncoding -> "Unicode"] <> "\n(" <>
            ToString[StringLength[text]] <> " characters of output shortened)"]
];

(* Math is a compound expression other than a list, or a rational or complex number. *)
mathQ[_Rational | _Complex] := True;
mathQ[x_List] := Or @@ (mathQ /@ x);
mathQ[_?AtomQ] := False;
mathQ[_] := True;

withTeX[x_, text_] := Module[{tex = $Failed},
    If[LeafCount[x] <= $maxTeXLeaves, tex = Quiet[Check[ToString[TeXForm[x]], $Failed]]];
    If[StringQ[tex] && 0 < StringLength[tex] <= $maxTeX,
        <|"text/plain" -> text, "text/latex" -> "$$" <> tex <> "$$"|>,
        <|"text/plain" -> text|>]
];

(* Images are exported by the kernel; everything else is drawn by a front end, which a
   standalone kernel starts on demand (UsingFrontEnd) where one is installed. *)
picture[x_Image, text_] := withImage[text, "image/png", base64[Quiet[ExportString[x, "PNG"]]]];
picture[x : (_Graphics3D | _Image3D), text_] :=
    withImage[text, "image/png", base64[frontEndExport[x, "PNG"]]];
picture[x : (_Sound | _Audio | _Dataset | _Manipulate | _Dynamic | _DynamicModule), text_] :=
    <|"text/plain" -> text|>;
picture[x_, text_] := withImage[text, "image/svg+xml", frontEndExport[x, "SVG"]];

withImage[text_, type_, data_String] /; StringLength[data] > 0 :=
    <|"text/plain" -> text, type -> data|>;
withImage[text_, _, _] := <|"text/plain" -> text <> "\n" <> notDrawn[]|>;

notDrawn[] := "(not drawn: " <> If[StringQ[$frontEnd], $frontEnd,
    "the kernel could not render it"] <> "; graphics need a Wolfram front end on this host)";

(* A front end is probed once, when the first picture needs one; a failure of any kind (no
   answer in time, $Failed, a launch message such as UsingFrontEnd::nofestart) is remembered,
   so that later pictures are text at once, with the reason.  What the front end itself says
   (a missing libEGL, say) reaches the kernel's output, which the agent logs. *)
frontEndExport[x_, format_] := If[frontEndQ[],
    Quiet[TimeConstrained[Check[withFrontEnd[ExportString[x, format]], $Failed],
        $renderSeconds,
        $frontEnd = "the front end did not draw within " <> ToString[$renderSeconds] <> " s";
        $Failed]],
    $Failed
];

frontEndQ[] := (If[$frontEnd === Automatic, $frontEnd = probeFrontEnd[]]; $frontEnd === True);

(* A kernel without UsingFrontEnd (Mathics3) draws by itself. *)
probeFrontEnd[] := If[Names["System`UsingFrontEnd"] === {}, True, askFrontEnd[]];

askFrontEnd[] := Module[{answer = Quiet[TimeConstrained[
        Check[UsingFrontEnd[$FrontEnd], $Failed], $renderSeconds, $TimedOut]]},
    Which[
        answer === $TimedOut, "no front end answered within " <> ToString[$renderSeconds] <>
            " s",
        answer === $Failed, "a front end could not be launched (the engine log has what " <>
            "it said)",
        answer === Null, "no front end is installed or usable",
        True, True
    ]
];

SetAttributes[withFrontEnd, HoldAll];
withFrontEnd[expr_] := If[Names["System`UsingFrontEnd"] =!= {}, UsingFrontEnd[expr], expr];

base64[data_String] := StringReplace[ExportString[data, "Base64"], WhitespaceCharacter -> ""];
base64[_] := $Failed;

RKJupyter`Complete[prefix_String] := Module[{names = Quiet[Names[prefix <> "*"]]},
    Take[names, Min[Length[names], 500]]
];

RKJupyter`Inspect[name_String] := Module[{usage = Null},
    If[Quiet[Names[name]] =!= {},
        usage = Quiet[ToExpression[name, InputForm,
            Function[symbol, MessageName[symbol, "usage"], HoldFirst]]]
    ];
    If[StringQ[usage], <|"text/plain" -> usage|>, Null]
];

RKJupyter`Info[] := <|"version" -> $Version, "versionNumber" -> $VersionNumber,
    "systemID" -> $SystemID, "processID" -> $ProcessID, "line" -> $Line|>;

End[];
